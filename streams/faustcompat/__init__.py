"""The one place where fraudstream touches faust-streaming's and aiokafka's internals.

Each module here does one thing with members those libraries do not publish, names the
upstream code it mirrors or wraps (module, class, function, version) and says why;
``tests/unit/faustcompat`` holds a contract test per touched internal that fails when
an upgrade changes it. The rest of fraudstream calls these modules' public functions
and never reads a private member itself (ruff's SLF001 checks it). Both libraries are
pinned in ``pyproject.toml``, and `check_versions` refuses any other version at start.

- ``versions``: the version guard.
- ``fetchloop``: Faust's fetch loop, without an event-loop round per message.
- ``rawbatches``: the agents' records in micro-batches straight from the fetch loop,
  without a Faust event, channel or stream per record.
- ``fetchwait``: the aiokafka consumer's fetch wait, which Faust hard-codes.
- ``records``: fetched records whose header names are not UTF-8.
- ``offsets``: the consumer's committed and read offset maps.
- ``seek``: code run around the consumer's seek after every rebalance.
- ``commit``: committing chosen offsets to the consumer group.
- ``pauses``: partitions kept paused whatever Faust resumes.
- ``rejoin``: making the consumer rejoin its group.
- ``metadata``: cluster metadata of the producer and of plain aiokafka consumers.
- ``producerclient``: intercepting an aiokafka producer's requests.
- ``groups``: deleting consumer groups (aiokafka's admin client cannot).
- ``threadstop``: stopping a service thread (Faust's consumer) that has not started yet.
"""

from streams.faustcompat.versions import PINNED, UnsupportedVersionError, check_versions

__all__ = ["PINNED", "UnsupportedVersionError", "check_versions"]
