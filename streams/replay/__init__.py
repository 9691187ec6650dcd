"""Replay a transaction dataset into Kafka: ``fraudstream replay`` (``streams.cli.replay``).

A labelled dataset (``features.dataset`` columns, Parquet or CSV, any size) becomes two
event streams: every row a ``Transaction`` on the transactions topic, every reported
fraud a ``FraudReport`` on the fraud-reports topic at its report time, interleaved in
event time as they would have happened. The pieces, each with one job:

- ``reader``: reads the file lazily through ``features.dataset.DatasetReader`` (the
  reader training uses: formats, ``--map``, types, row checks), encodes the rows in
  polars' streaming engine, and hands on time-ordered chunks (memory bounded by the
  chunk, not the file).
- ``encoding``: the events' JSON from columns, byte for byte the record encoder's.
- ``events``: merges transactions and their later reports into send order (pure).
- ``pacing``: when each event may go (pure): as fast as possible (default), at a speed
  (event seconds per second), or at a rate (events per second).
- ``sender``: the Kafka edge: topic checks, an idempotent producer, batches, the
  ``fraudstream-sent-ms`` header, Ctrl-C.

Decisions, in short: transactions keyed by customer_id, reports by terminal_id (DESIGN
"Data flow"); Kafka timestamp = event time; order by event time, reports before
transactions at equal times, then tx_id (``features.online``); the file must be sorted by
tx_time (checked); the event topics keep data forever (``retention.ms=-1``), since their
timestamps are historical.
"""
