"""The MQTT control contract shared by the agent, the backend, `flumph ctl` and the tests.

Every topic string is built here and nowhere else. Payloads are JSON objects validated by the
models below; a bad payload raises :class:`ContractError` whose message names the field, which
the receiver reports on ``reported.error`` or ``ack`` instead of crashing.

Topics under a prefix ``<p>`` (default ``flumph``), MQTT 3.1.1 so that every broker works:

| topic                  | publisher                 | retain / QoS | payload                  |
|------------------------|---------------------------|--------------|--------------------------|
| ``<p>/<dev>/status``   | device birth, broker will | retained, 1  | :class:`Status`          |
| ``<p>/<dev>/desired``  | backend (shadow owner)    | retained, 1  | :class:`Desired`         |
| ``<p>/<dev>/set``      | dashboard, ctl, ops tools | no, 1        | partial settings (patch) |
| ``<p>/<dev>/set/accepted`` | backend (shadow owner) | no, 1       | :class:`SetAccepted`     |
| ``<p>/<dev>/set/rejected`` | backend (shadow owner) | no, 1       | :class:`SetRejected`     |
| ``<p>/<dev>/reported`` | device                    | retained, 1  | :class:`Reported`        |
| ``<p>/<dev>/cmd/<n>``  | dashboard, ctl, ops tools | no, 1        | :class:`Command`         |
| ``<p>/<dev>/ack``      | device                    | no, 1        | :class:`Ack`             |
| ``<p>/<dev>/telemetry``| device                    | no, 0        | :class:`Telemetry`       |
| ``<p>/<dev>/snapshot`` | device                    | retained, 1  | image bytes (AVIF/JPEG)  |
| ``<p>/<dev>/demand``   | ingest                    | retained, 1  | :class:`Demand`          |

Why: desired/reported is the AWS-shadow model, so a device that was offline converges to the
latest wish on reconnect and a partial update cannot be half-applied. ``set`` carries partial
patches (what ``mosquitto_pub -t flumph/cam1/set -m '{"streaming":true}'`` sends); the backend
merges each into the retained ``desired`` with the version + 1, so the device follows one
document, and answers every patch on ``set/accepted`` (the new version) or ``set/rejected`` (the
error, naming the field): the AWS IoT shadow's ``update/accepted``/``update/rejected``, so a tool
learns what happened without reading the backend's log. A patch may carry ``client_token`` (a
string the answer echoes, as AWS's ``clientToken``) to pick its own answer among others'.
One-shot commands are never retained (retained commands replay on reconnect).
``demand`` is the ingest's count of viewers waiting on a device: the backend turns it into
on-demand start/stop, so the ingest decides nothing about devices.

The package, one job a module: ``wire`` (the contract's errors, version, limits, message base
classes and :func:`decode`), ``topics`` (every topic name, built and parsed), ``patches`` (what
people send to change settings: ``set`` patches and the ``desired`` document, strict),
``messages`` (what components tell each other, tolerant readers; commands, strict). Import every
public name from here: ``from flumph.control import Topics, Telemetry``.
"""

from __future__ import annotations

from flumph.control.messages import (
    COMMAND_MODELS,
    MAX_GRANT_MB,
    Ack,
    Budget,
    BudgetState,
    Command,
    Demand,
    Grant,
    Ladder,
    LinkStats,
    Rate,
    Reported,
    SetAccepted,
    SetRejected,
    SourceReport,
    Status,
    Telemetry,
    Usage,
    decode_command,
)
from flumph.control.patches import (
    CLIENT_TOKEN,
    CLIENT_TOKEN_MAX,
    SETTINGS_KEYS,
    Desired,
    SetRequest,
    client_token_of,
    decode_desired,
    decode_patch,
    decode_set,
    merge_desired,
    validate_patch,
)
from flumph.control.topics import (
    COMMANDS,
    DEFAULT_PREFIX,
    KINDS,
    PREFIX_RE,
    CommandName,
    ParsedTopic,
    TopicKind,
    Topics,
    check_device_id,
)
from flumph.control.wire import (
    CONTRACT_VERSION,
    MAX_DEPTH,
    MAX_PAYLOAD,
    ContractError,
    Message,
    PatchError,
    Request,
    decode,
    now,
)

__all__ = [
    "CLIENT_TOKEN",
    "CLIENT_TOKEN_MAX",
    "COMMANDS",
    "COMMAND_MODELS",
    "CONTRACT_VERSION",
    "DEFAULT_PREFIX",
    "KINDS",
    "MAX_DEPTH",
    "MAX_GRANT_MB",
    "MAX_PAYLOAD",
    "PREFIX_RE",
    "SETTINGS_KEYS",
    "Ack",
    "Budget",
    "BudgetState",
    "Command",
    "CommandName",
    "ContractError",
    "Demand",
    "Desired",
    "Grant",
    "Ladder",
    "LinkStats",
    "Message",
    "ParsedTopic",
    "PatchError",
    "Rate",
    "Reported",
    "Request",
    "SetAccepted",
    "SetRejected",
    "SetRequest",
    "SourceReport",
    "Status",
    "Telemetry",
    "TopicKind",
    "Topics",
    "Usage",
    "check_device_id",
    "client_token_of",
    "decode",
    "decode_command",
    "decode_desired",
    "decode_patch",
    "decode_set",
    "merge_desired",
    "now",
    "validate_patch",
]
