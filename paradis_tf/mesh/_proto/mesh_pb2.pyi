from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class DType(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    DTYPE_UNSPECIFIED: _ClassVar[DType]
    DTYPE_INT8: _ClassVar[DType]
    DTYPE_UINT8: _ClassVar[DType]
    DTYPE_INT16: _ClassVar[DType]
    DTYPE_INT32: _ClassVar[DType]
    DTYPE_FLOAT32: _ClassVar[DType]
DTYPE_UNSPECIFIED: DType
DTYPE_INT8: DType
DTYPE_UINT8: DType
DTYPE_INT16: DType
DTYPE_INT32: DType
DTYPE_FLOAT32: DType

class Tensor(_message.Message):
    __slots__ = ("dtype", "shape", "data", "scale", "zero_point")
    DTYPE_FIELD_NUMBER: _ClassVar[int]
    SHAPE_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    SCALE_FIELD_NUMBER: _ClassVar[int]
    ZERO_POINT_FIELD_NUMBER: _ClassVar[int]
    dtype: DType
    shape: _containers.RepeatedScalarFieldContainer[int]
    data: bytes
    scale: float
    zero_point: int
    def __init__(self, dtype: _Optional[_Union[DType, str]] = ..., shape: _Optional[_Iterable[int]] = ..., data: _Optional[bytes] = ..., scale: _Optional[float] = ..., zero_point: _Optional[int] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class BundleVersion(_message.Message):
    __slots__ = ("version", "deployed_unix_ms", "bytes", "plans")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    DEPLOYED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    PLANS_FIELD_NUMBER: _ClassVar[int]
    version: str
    deployed_unix_ms: int
    bytes: int
    plans: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, version: _Optional[str] = ..., deployed_unix_ms: _Optional[int] = ..., bytes: _Optional[int] = ..., plans: _Optional[_Iterable[str]] = ...) -> None: ...

class StoredBundle(_message.Message):
    __slots__ = ("name", "versions")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    name: str
    versions: _containers.RepeatedCompositeFieldContainer[BundleVersion]
    def __init__(self, name: _Optional[str] = ..., versions: _Optional[_Iterable[_Union[BundleVersion, _Mapping]]] = ...) -> None: ...

class Activation(_message.Message):
    __slots__ = ("bundle", "version", "plan", "role", "peers", "activation_id", "peer_node_ids")
    class PeersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    class PeerNodeIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    version: str
    plan: str
    role: int
    peers: _containers.ScalarMap[int, str]
    activation_id: str
    peer_node_ids: _containers.ScalarMap[int, str]
    def __init__(self, bundle: _Optional[str] = ..., version: _Optional[str] = ..., plan: _Optional[str] = ..., role: _Optional[int] = ..., peers: _Optional[_Mapping[int, str]] = ..., activation_id: _Optional[str] = ..., peer_node_ids: _Optional[_Mapping[int, str]] = ...) -> None: ...

class Counters(_message.Message):
    __slots__ = ("runs", "run_errors", "exchanges_sent", "exchanges_received", "exchange_bytes_sent", "exchange_bytes_received", "deploys", "activations")
    RUNS_FIELD_NUMBER: _ClassVar[int]
    RUN_ERRORS_FIELD_NUMBER: _ClassVar[int]
    EXCHANGES_SENT_FIELD_NUMBER: _ClassVar[int]
    EXCHANGES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_BYTES_SENT_FIELD_NUMBER: _ClassVar[int]
    EXCHANGE_BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    DEPLOYS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATIONS_FIELD_NUMBER: _ClassVar[int]
    runs: int
    run_errors: int
    exchanges_sent: int
    exchanges_received: int
    exchange_bytes_sent: int
    exchange_bytes_received: int
    deploys: int
    activations: int
    def __init__(self, runs: _Optional[int] = ..., run_errors: _Optional[int] = ..., exchanges_sent: _Optional[int] = ..., exchanges_received: _Optional[int] = ..., exchange_bytes_sent: _Optional[int] = ..., exchange_bytes_received: _Optional[int] = ..., deploys: _Optional[int] = ..., activations: _Optional[int] = ...) -> None: ...

class NodeInfo(_message.Message):
    __slots__ = ("node_id", "software_version", "backend", "cores", "speed_score", "capacity", "latency_budget_ms", "memory_bytes", "bundles", "active", "activation", "role_latency_ms", "counters", "started_unix_ms", "kind", "memory_budget_bytes", "max_batch", "store_quota_bytes", "store_bytes", "trusted_keys", "tls_role", "board")
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    SOFTWARE_VERSION_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    CORES_FIELD_NUMBER: _ClassVar[int]
    SPEED_SCORE_FIELD_NUMBER: _ClassVar[int]
    CAPACITY_FIELD_NUMBER: _ClassVar[int]
    LATENCY_BUDGET_MS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BYTES_FIELD_NUMBER: _ClassVar[int]
    BUNDLES_FIELD_NUMBER: _ClassVar[int]
    ACTIVE_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    COUNTERS_FIELD_NUMBER: _ClassVar[int]
    STARTED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    KIND_FIELD_NUMBER: _ClassVar[int]
    MEMORY_BUDGET_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    STORE_QUOTA_BYTES_FIELD_NUMBER: _ClassVar[int]
    STORE_BYTES_FIELD_NUMBER: _ClassVar[int]
    TRUSTED_KEYS_FIELD_NUMBER: _ClassVar[int]
    TLS_ROLE_FIELD_NUMBER: _ClassVar[int]
    BOARD_FIELD_NUMBER: _ClassVar[int]
    node_id: str
    software_version: str
    backend: str
    cores: int
    speed_score: float
    capacity: float
    latency_budget_ms: float
    memory_bytes: int
    bundles: _containers.RepeatedCompositeFieldContainer[StoredBundle]
    active: bool
    activation: Activation
    role_latency_ms: float
    counters: Counters
    started_unix_ms: int
    kind: str
    memory_budget_bytes: int
    max_batch: int
    store_quota_bytes: int
    store_bytes: int
    trusted_keys: _containers.RepeatedScalarFieldContainer[str]
    tls_role: str
    board: BoardStatus
    def __init__(self, node_id: _Optional[str] = ..., software_version: _Optional[str] = ..., backend: _Optional[str] = ..., cores: _Optional[int] = ..., speed_score: _Optional[float] = ..., capacity: _Optional[float] = ..., latency_budget_ms: _Optional[float] = ..., memory_bytes: _Optional[int] = ..., bundles: _Optional[_Iterable[_Union[StoredBundle, _Mapping]]] = ..., active: _Optional[bool] = ..., activation: _Optional[_Union[Activation, _Mapping]] = ..., role_latency_ms: _Optional[float] = ..., counters: _Optional[_Union[Counters, _Mapping]] = ..., started_unix_ms: _Optional[int] = ..., kind: _Optional[str] = ..., memory_budget_bytes: _Optional[int] = ..., max_batch: _Optional[int] = ..., store_quota_bytes: _Optional[int] = ..., store_bytes: _Optional[int] = ..., trusted_keys: _Optional[_Iterable[str]] = ..., tls_role: _Optional[str] = ..., board: _Optional[_Union[BoardStatus, _Mapping]] = ...) -> None: ...

class BoardStatus(_message.Message):
    __slots__ = ("state", "error", "since_unix_ms", "last_answer_unix_ms", "board_id", "port", "frames_retransmitted", "bad_frames", "crc_errors", "naks", "port_reopens", "probes_failed", "reflashes")
    STATE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SINCE_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    LAST_ANSWER_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    BOARD_ID_FIELD_NUMBER: _ClassVar[int]
    PORT_FIELD_NUMBER: _ClassVar[int]
    FRAMES_RETRANSMITTED_FIELD_NUMBER: _ClassVar[int]
    BAD_FRAMES_FIELD_NUMBER: _ClassVar[int]
    CRC_ERRORS_FIELD_NUMBER: _ClassVar[int]
    NAKS_FIELD_NUMBER: _ClassVar[int]
    PORT_REOPENS_FIELD_NUMBER: _ClassVar[int]
    PROBES_FAILED_FIELD_NUMBER: _ClassVar[int]
    REFLASHES_FIELD_NUMBER: _ClassVar[int]
    state: str
    error: str
    since_unix_ms: int
    last_answer_unix_ms: int
    board_id: str
    port: str
    frames_retransmitted: int
    bad_frames: int
    crc_errors: int
    naks: int
    port_reopens: int
    probes_failed: int
    reflashes: int
    def __init__(self, state: _Optional[str] = ..., error: _Optional[str] = ..., since_unix_ms: _Optional[int] = ..., last_answer_unix_ms: _Optional[int] = ..., board_id: _Optional[str] = ..., port: _Optional[str] = ..., frames_retransmitted: _Optional[int] = ..., bad_frames: _Optional[int] = ..., crc_errors: _Optional[int] = ..., naks: _Optional[int] = ..., port_reopens: _Optional[int] = ..., probes_failed: _Optional[int] = ..., reflashes: _Optional[int] = ...) -> None: ...

class FileEntry(_message.Message):
    __slots__ = ("path", "size", "sha256")
    PATH_FIELD_NUMBER: _ClassVar[int]
    SIZE_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    path: str
    size: int
    sha256: str
    def __init__(self, path: _Optional[str] = ..., size: _Optional[int] = ..., sha256: _Optional[str] = ...) -> None: ...

class DeployBegin(_message.Message):
    __slots__ = ("bundle", "manifest_sha256", "files")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_SHA256_FIELD_NUMBER: _ClassVar[int]
    FILES_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    manifest_sha256: str
    files: _containers.RepeatedCompositeFieldContainer[FileEntry]
    def __init__(self, bundle: _Optional[str] = ..., manifest_sha256: _Optional[str] = ..., files: _Optional[_Iterable[_Union[FileEntry, _Mapping]]] = ...) -> None: ...

class FileChunk(_message.Message):
    __slots__ = ("file_index", "offset", "data")
    FILE_INDEX_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    file_index: int
    offset: int
    data: bytes
    def __init__(self, file_index: _Optional[int] = ..., offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class DeployCommit(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class DeployRequest(_message.Message):
    __slots__ = ("begin", "chunk", "commit")
    BEGIN_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    COMMIT_FIELD_NUMBER: _ClassVar[int]
    begin: DeployBegin
    chunk: FileChunk
    commit: DeployCommit
    def __init__(self, begin: _Optional[_Union[DeployBegin, _Mapping]] = ..., chunk: _Optional[_Union[FileChunk, _Mapping]] = ..., commit: _Optional[_Union[DeployCommit, _Mapping]] = ...) -> None: ...

class DeployReply(_message.Message):
    __slots__ = ("bundle", "version", "bytes", "already_present", "versions")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    VERSIONS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    version: str
    bytes: int
    already_present: bool
    versions: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, bundle: _Optional[str] = ..., version: _Optional[str] = ..., bytes: _Optional[int] = ..., already_present: _Optional[bool] = ..., versions: _Optional[_Iterable[str]] = ...) -> None: ...

class ActivateRequest(_message.Message):
    __slots__ = ("bundle", "version", "plan", "role", "peers", "activation_id", "peer_node_ids")
    class PeersEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    class PeerNodeIdsEntry(_message.Message):
        __slots__ = ("key", "value")
        KEY_FIELD_NUMBER: _ClassVar[int]
        VALUE_FIELD_NUMBER: _ClassVar[int]
        key: int
        value: str
        def __init__(self, key: _Optional[int] = ..., value: _Optional[str] = ...) -> None: ...
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    PEERS_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PEER_NODE_IDS_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    version: str
    plan: str
    role: int
    peers: _containers.ScalarMap[int, str]
    activation_id: str
    peer_node_ids: _containers.ScalarMap[int, str]
    def __init__(self, bundle: _Optional[str] = ..., version: _Optional[str] = ..., plan: _Optional[str] = ..., role: _Optional[int] = ..., peers: _Optional[_Mapping[int, str]] = ..., activation_id: _Optional[str] = ..., peer_node_ids: _Optional[_Mapping[int, str]] = ...) -> None: ...

class ActivateReply(_message.Message):
    __slots__ = ("activation", "role_latency_ms")
    ACTIVATION_FIELD_NUMBER: _ClassVar[int]
    ROLE_LATENCY_MS_FIELD_NUMBER: _ClassVar[int]
    activation: Activation
    role_latency_ms: float
    def __init__(self, activation: _Optional[_Union[Activation, _Mapping]] = ..., role_latency_ms: _Optional[float] = ...) -> None: ...

class RunRequest(_message.Message):
    __slots__ = ("request_id", "plan", "activation_id", "input")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_ID_FIELD_NUMBER: _ClassVar[int]
    INPUT_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    plan: str
    activation_id: str
    input: Tensor
    def __init__(self, request_id: _Optional[str] = ..., plan: _Optional[str] = ..., activation_id: _Optional[str] = ..., input: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class SegmentOutput(_message.Message):
    __slots__ = ("segment", "tensor")
    SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    segment: int
    tensor: Tensor
    def __init__(self, segment: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class RunReply(_message.Message):
    __slots__ = ("request_id", "role", "outputs", "compute_ms", "wait_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_MS_FIELD_NUMBER: _ClassVar[int]
    WAIT_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    role: int
    outputs: _containers.RepeatedCompositeFieldContainer[SegmentOutput]
    compute_ms: float
    wait_ms: float
    def __init__(self, request_id: _Optional[str] = ..., role: _Optional[int] = ..., outputs: _Optional[_Iterable[_Union[SegmentOutput, _Mapping]]] = ..., compute_ms: _Optional[float] = ..., wait_ms: _Optional[float] = ...) -> None: ...

class ExchangeRequest(_message.Message):
    __slots__ = ("request_id", "plan", "activation_id", "producer_role", "producer_segment", "tensor")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    ACTIVATION_ID_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_ROLE_FIELD_NUMBER: _ClassVar[int]
    PRODUCER_SEGMENT_FIELD_NUMBER: _ClassVar[int]
    TENSOR_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    plan: str
    activation_id: str
    producer_role: int
    producer_segment: int
    tensor: Tensor
    def __init__(self, request_id: _Optional[str] = ..., plan: _Optional[str] = ..., activation_id: _Optional[str] = ..., producer_role: _Optional[int] = ..., producer_segment: _Optional[int] = ..., tensor: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class ExchangeReply(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class GetManifestRequest(_message.Message):
    __slots__ = ("bundle", "version")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    version: str
    def __init__(self, bundle: _Optional[str] = ..., version: _Optional[str] = ...) -> None: ...

class GetManifestReply(_message.Message):
    __slots__ = ("bundle", "version", "manifest_json")
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    bundle: str
    version: str
    manifest_json: bytes
    def __init__(self, bundle: _Optional[str] = ..., version: _Optional[str] = ..., manifest_json: _Optional[bytes] = ...) -> None: ...

class ProbeRequest(_message.Message):
    __slots__ = ("payload", "reply_bytes")
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    REPLY_BYTES_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    reply_bytes: int
    def __init__(self, payload: _Optional[bytes] = ..., reply_bytes: _Optional[int] = ...) -> None: ...

class ProbeReply(_message.Message):
    __slots__ = ("payload",)
    PAYLOAD_FIELD_NUMBER: _ClassVar[int]
    payload: bytes
    def __init__(self, payload: _Optional[bytes] = ...) -> None: ...

class InferRequest(_message.Message):
    __slots__ = ("request_id", "inputs")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    INPUTS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    inputs: Tensor
    def __init__(self, request_id: _Optional[str] = ..., inputs: _Optional[_Union[Tensor, _Mapping]] = ...) -> None: ...

class InferReply(_message.Message):
    __slots__ = ("request_id", "outputs", "plan", "nodes", "replanned", "server_ms")
    REQUEST_ID_FIELD_NUMBER: _ClassVar[int]
    OUTPUTS_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    REPLANNED_FIELD_NUMBER: _ClassVar[int]
    SERVER_MS_FIELD_NUMBER: _ClassVar[int]
    request_id: str
    outputs: Tensor
    plan: str
    nodes: _containers.RepeatedScalarFieldContainer[str]
    replanned: bool
    server_ms: float
    def __init__(self, request_id: _Optional[str] = ..., outputs: _Optional[_Union[Tensor, _Mapping]] = ..., plan: _Optional[str] = ..., nodes: _Optional[_Iterable[str]] = ..., replanned: _Optional[bool] = ..., server_ms: _Optional[float] = ...) -> None: ...

class InferenceStatusRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class LineNode(_message.Message):
    __slots__ = ("address", "node_id", "up", "role", "error")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    NODE_ID_FIELD_NUMBER: _ClassVar[int]
    UP_FIELD_NUMBER: _ClassVar[int]
    ROLE_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    address: str
    node_id: str
    up: bool
    role: int
    error: str
    def __init__(self, address: _Optional[str] = ..., node_id: _Optional[str] = ..., up: _Optional[bool] = ..., role: _Optional[int] = ..., error: _Optional[str] = ...) -> None: ...

class InferenceStatus(_message.Message):
    __slots__ = ("serving", "reason", "switch", "plan", "nodes", "bundle", "input_shape", "max_batch", "labels", "checked_unix_ms")
    SERVING_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    SWITCH_FIELD_NUMBER: _ClassVar[int]
    PLAN_FIELD_NUMBER: _ClassVar[int]
    NODES_FIELD_NUMBER: _ClassVar[int]
    BUNDLE_FIELD_NUMBER: _ClassVar[int]
    INPUT_SHAPE_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    LABELS_FIELD_NUMBER: _ClassVar[int]
    CHECKED_UNIX_MS_FIELD_NUMBER: _ClassVar[int]
    serving: bool
    reason: str
    switch: str
    plan: str
    nodes: _containers.RepeatedCompositeFieldContainer[LineNode]
    bundle: str
    input_shape: _containers.RepeatedScalarFieldContainer[int]
    max_batch: int
    labels: _containers.RepeatedScalarFieldContainer[str]
    checked_unix_ms: int
    def __init__(self, serving: _Optional[bool] = ..., reason: _Optional[str] = ..., switch: _Optional[str] = ..., plan: _Optional[str] = ..., nodes: _Optional[_Iterable[_Union[LineNode, _Mapping]]] = ..., bundle: _Optional[str] = ..., input_shape: _Optional[_Iterable[int]] = ..., max_batch: _Optional[int] = ..., labels: _Optional[_Iterable[str]] = ..., checked_unix_ms: _Optional[int] = ...) -> None: ...
