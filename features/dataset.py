"""The transaction dataset's columns: what the simulator writes, replay reads, engines use.

One table of transactions with their fraud labels, in the handbook's shape but with the
names and types of our event contracts (ids as strings, times as UTC instants with
millisecond precision, amounts in a currency). A fraud's report time is a column of the
same row: null for genuine transactions.
"""

from __future__ import annotations

from typing import Final

import polars as pl

TX_ID: Final = "tx_id"
TX_TIME: Final = "tx_time"
CUSTOMER_ID: Final = "customer_id"
TERMINAL_ID: Final = "terminal_id"
AMOUNT: Final = "amount"
CURRENCY: Final = "currency"
IS_FRAUD: Final = "is_fraud"
FRAUD_SCENARIO: Final = "fraud_scenario"
REPORTED_AT: Final = "reported_at"

#: Millisecond UTC instants: the same precision as Kafka timestamps and our events.
TIMESTAMP: Final = pl.Datetime("ms", "UTC")

#: Column name -> polars type, in file order.
TRANSACTION_COLUMNS: Final[dict[str, pl.DataType]] = {
    TX_ID: pl.String(),
    TX_TIME: TIMESTAMP,
    CUSTOMER_ID: pl.String(),
    TERMINAL_ID: pl.String(),
    AMOUNT: pl.Float64(),  # rounded to cents
    CURRENCY: pl.String(),  # ISO 4217 code
    IS_FRAUD: pl.Boolean(),
    FRAUD_SCENARIO: pl.Int8(),  # 0 genuine, 1 amount > 220, 2 terminal, 3 customer
    REPORTED_AT: TIMESTAMP,  # null unless is_fraud
}

#: Columns a dataset must have to be replayed or featurised; the rest are optional.
REQUIRED_COLUMNS: Final = (TX_ID, TX_TIME, CUSTOMER_ID, TERMINAL_ID, AMOUNT)

#: The currency of simulated transactions and of datasets that name none.
DEFAULT_CURRENCY: Final = "EUR"
