from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class RuntimeKind(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUNTIME_UNSPECIFIED: _ClassVar[RuntimeKind]
    RUNTIME_ONNXRUNTIME: _ClassVar[RuntimeKind]
    RUNTIME_TORCHSCRIPT: _ClassVar[RuntimeKind]
    RUNTIME_EXECUTORCH: _ClassVar[RuntimeKind]
    RUNTIME_LITERT: _ClassVar[RuntimeKind]

class GraphOptimization(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    GRAPH_OPT_UNSPECIFIED: _ClassVar[GraphOptimization]
    GRAPH_OPT_DISABLE: _ClassVar[GraphOptimization]
    GRAPH_OPT_BASIC: _ClassVar[GraphOptimization]
    GRAPH_OPT_EXTENDED: _ClassVar[GraphOptimization]
    GRAPH_OPT_ALL: _ClassVar[GraphOptimization]

class RunState(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    RUN_STATE_UNSPECIFIED: _ClassVar[RunState]
    RUN_STATE_QUEUED: _ClassVar[RunState]
    RUN_STATE_RUNNING: _ClassVar[RunState]
    RUN_STATE_SUCCEEDED: _ClassVar[RunState]
    RUN_STATE_FAILED: _ClassVar[RunState]
    RUN_STATE_TIMED_OUT: _ClassVar[RunState]
    RUN_STATE_INTERRUPTED: _ClassVar[RunState]
RUNTIME_UNSPECIFIED: RuntimeKind
RUNTIME_ONNXRUNTIME: RuntimeKind
RUNTIME_TORCHSCRIPT: RuntimeKind
RUNTIME_EXECUTORCH: RuntimeKind
RUNTIME_LITERT: RuntimeKind
GRAPH_OPT_UNSPECIFIED: GraphOptimization
GRAPH_OPT_DISABLE: GraphOptimization
GRAPH_OPT_BASIC: GraphOptimization
GRAPH_OPT_EXTENDED: GraphOptimization
GRAPH_OPT_ALL: GraphOptimization
RUN_STATE_UNSPECIFIED: RunState
RUN_STATE_QUEUED: RunState
RUN_STATE_RUNNING: RunState
RUN_STATE_SUCCEEDED: RunState
RUN_STATE_FAILED: RunState
RUN_STATE_TIMED_OUT: RunState
RUN_STATE_INTERRUPTED: RunState

class GetDeviceInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class Runtime(_message.Message):
    __slots__ = ("name", "version", "providers", "quantized_engines")
    NAME_FIELD_NUMBER: _ClassVar[int]
    VERSION_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    QUANTIZED_ENGINES_FIELD_NUMBER: _ClassVar[int]
    name: str
    version: str
    providers: _containers.RepeatedScalarFieldContainer[str]
    quantized_engines: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, name: _Optional[str] = ..., version: _Optional[str] = ..., providers: _Optional[_Iterable[str]] = ..., quantized_engines: _Optional[_Iterable[str]] = ...) -> None: ...

class DeviceInfo(_message.Message):
    __slots__ = ("device_id", "hostname", "arch", "cpu_model", "cpu_count", "cpu_flags", "memory_total_bytes", "memory_available_bytes", "os", "kernel", "python_version", "runtimes", "board_model", "state", "agent_version", "suggested_target", "warnings", "worker_confinement")
    DEVICE_ID_FIELD_NUMBER: _ClassVar[int]
    HOSTNAME_FIELD_NUMBER: _ClassVar[int]
    ARCH_FIELD_NUMBER: _ClassVar[int]
    CPU_MODEL_FIELD_NUMBER: _ClassVar[int]
    CPU_COUNT_FIELD_NUMBER: _ClassVar[int]
    CPU_FLAGS_FIELD_NUMBER: _ClassVar[int]
    MEMORY_TOTAL_BYTES_FIELD_NUMBER: _ClassVar[int]
    MEMORY_AVAILABLE_BYTES_FIELD_NUMBER: _ClassVar[int]
    OS_FIELD_NUMBER: _ClassVar[int]
    KERNEL_FIELD_NUMBER: _ClassVar[int]
    PYTHON_VERSION_FIELD_NUMBER: _ClassVar[int]
    RUNTIMES_FIELD_NUMBER: _ClassVar[int]
    BOARD_MODEL_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    AGENT_VERSION_FIELD_NUMBER: _ClassVar[int]
    SUGGESTED_TARGET_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    WORKER_CONFINEMENT_FIELD_NUMBER: _ClassVar[int]
    device_id: str
    hostname: str
    arch: str
    cpu_model: str
    cpu_count: int
    cpu_flags: _containers.RepeatedScalarFieldContainer[str]
    memory_total_bytes: int
    memory_available_bytes: int
    os: str
    kernel: str
    python_version: str
    runtimes: _containers.RepeatedCompositeFieldContainer[Runtime]
    board_model: str
    state: DeviceState
    agent_version: str
    suggested_target: str
    warnings: _containers.RepeatedScalarFieldContainer[str]
    worker_confinement: str
    def __init__(self, device_id: _Optional[str] = ..., hostname: _Optional[str] = ..., arch: _Optional[str] = ..., cpu_model: _Optional[str] = ..., cpu_count: _Optional[int] = ..., cpu_flags: _Optional[_Iterable[str]] = ..., memory_total_bytes: _Optional[int] = ..., memory_available_bytes: _Optional[int] = ..., os: _Optional[str] = ..., kernel: _Optional[str] = ..., python_version: _Optional[str] = ..., runtimes: _Optional[_Iterable[_Union[Runtime, _Mapping]]] = ..., board_model: _Optional[str] = ..., state: _Optional[_Union[DeviceState, _Mapping]] = ..., agent_version: _Optional[str] = ..., suggested_target: _Optional[str] = ..., warnings: _Optional[_Iterable[str]] = ..., worker_confinement: _Optional[str] = ...) -> None: ...

class DeviceState(_message.Message):
    __slots__ = ("temperature_c", "cpu_freq_mhz", "governor", "throttled", "throttled_raw", "load_1m")
    TEMPERATURE_C_FIELD_NUMBER: _ClassVar[int]
    CPU_FREQ_MHZ_FIELD_NUMBER: _ClassVar[int]
    GOVERNOR_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_FIELD_NUMBER: _ClassVar[int]
    THROTTLED_RAW_FIELD_NUMBER: _ClassVar[int]
    LOAD_1M_FIELD_NUMBER: _ClassVar[int]
    temperature_c: float
    cpu_freq_mhz: float
    governor: str
    throttled: bool
    throttled_raw: str
    load_1m: float
    def __init__(self, temperature_c: _Optional[float] = ..., cpu_freq_mhz: _Optional[float] = ..., governor: _Optional[str] = ..., throttled: _Optional[bool] = ..., throttled_raw: _Optional[str] = ..., load_1m: _Optional[float] = ...) -> None: ...

class StatArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class StatArtifactResponse(_message.Message):
    __slots__ = ("present", "staged_bytes", "artifact")
    PRESENT_FIELD_NUMBER: _ClassVar[int]
    STAGED_BYTES_FIELD_NUMBER: _ClassVar[int]
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    present: bool
    staged_bytes: int
    artifact: ArtifactInfo
    def __init__(self, present: _Optional[bool] = ..., staged_bytes: _Optional[int] = ..., artifact: _Optional[_Union[ArtifactInfo, _Mapping]] = ...) -> None: ...

class PushHeader(_message.Message):
    __slots__ = ("sha256", "size_bytes", "name", "manifest_json", "offset")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    name: str
    manifest_json: str
    offset: int
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., name: _Optional[str] = ..., manifest_json: _Optional[str] = ..., offset: _Optional[int] = ...) -> None: ...

class Chunk(_message.Message):
    __slots__ = ("offset", "data")
    OFFSET_FIELD_NUMBER: _ClassVar[int]
    DATA_FIELD_NUMBER: _ClassVar[int]
    offset: int
    data: bytes
    def __init__(self, offset: _Optional[int] = ..., data: _Optional[bytes] = ...) -> None: ...

class PushRequest(_message.Message):
    __slots__ = ("header", "chunk")
    HEADER_FIELD_NUMBER: _ClassVar[int]
    CHUNK_FIELD_NUMBER: _ClassVar[int]
    header: PushHeader
    chunk: Chunk
    def __init__(self, header: _Optional[_Union[PushHeader, _Mapping]] = ..., chunk: _Optional[_Union[Chunk, _Mapping]] = ...) -> None: ...

class PushResponse(_message.Message):
    __slots__ = ("artifact", "already_present", "bytes_received")
    ARTIFACT_FIELD_NUMBER: _ClassVar[int]
    ALREADY_PRESENT_FIELD_NUMBER: _ClassVar[int]
    BYTES_RECEIVED_FIELD_NUMBER: _ClassVar[int]
    artifact: ArtifactInfo
    already_present: bool
    bytes_received: int
    def __init__(self, artifact: _Optional[_Union[ArtifactInfo, _Mapping]] = ..., already_present: _Optional[bool] = ..., bytes_received: _Optional[int] = ...) -> None: ...

class ArtifactInfo(_message.Message):
    __slots__ = ("sha256", "size_bytes", "name", "format", "precision", "manifest_json", "committed_at")
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SIZE_BYTES_FIELD_NUMBER: _ClassVar[int]
    NAME_FIELD_NUMBER: _ClassVar[int]
    FORMAT_FIELD_NUMBER: _ClassVar[int]
    PRECISION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    COMMITTED_AT_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    size_bytes: int
    name: str
    format: str
    precision: str
    manifest_json: str
    committed_at: str
    def __init__(self, sha256: _Optional[str] = ..., size_bytes: _Optional[int] = ..., name: _Optional[str] = ..., format: _Optional[str] = ..., precision: _Optional[str] = ..., manifest_json: _Optional[str] = ..., committed_at: _Optional[str] = ...) -> None: ...

class ListArtifactsRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class ListArtifactsResponse(_message.Message):
    __slots__ = ("artifacts",)
    ARTIFACTS_FIELD_NUMBER: _ClassVar[int]
    artifacts: _containers.RepeatedCompositeFieldContainer[ArtifactInfo]
    def __init__(self, artifacts: _Optional[_Iterable[_Union[ArtifactInfo, _Mapping]]] = ...) -> None: ...

class DeleteArtifactRequest(_message.Message):
    __slots__ = ("sha256",)
    SHA256_FIELD_NUMBER: _ClassVar[int]
    sha256: str
    def __init__(self, sha256: _Optional[str] = ...) -> None: ...

class DeleteArtifactResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: bool
    def __init__(self, deleted: _Optional[bool] = ...) -> None: ...

class BenchmarkSettings(_message.Message):
    __slots__ = ("runtime", "batch_size", "threads", "warmup_runs", "warmup_min_seconds", "iterations", "min_seconds", "graph_optimization", "timeout_seconds", "keep_samples")
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    BATCH_SIZE_FIELD_NUMBER: _ClassVar[int]
    THREADS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_RUNS_FIELD_NUMBER: _ClassVar[int]
    WARMUP_MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    ITERATIONS_FIELD_NUMBER: _ClassVar[int]
    MIN_SECONDS_FIELD_NUMBER: _ClassVar[int]
    GRAPH_OPTIMIZATION_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_SECONDS_FIELD_NUMBER: _ClassVar[int]
    KEEP_SAMPLES_FIELD_NUMBER: _ClassVar[int]
    runtime: RuntimeKind
    batch_size: int
    threads: int
    warmup_runs: int
    warmup_min_seconds: float
    iterations: int
    min_seconds: float
    graph_optimization: GraphOptimization
    timeout_seconds: float
    keep_samples: bool
    def __init__(self, runtime: _Optional[_Union[RuntimeKind, str]] = ..., batch_size: _Optional[int] = ..., threads: _Optional[int] = ..., warmup_runs: _Optional[int] = ..., warmup_min_seconds: _Optional[float] = ..., iterations: _Optional[int] = ..., min_seconds: _Optional[float] = ..., graph_optimization: _Optional[_Union[GraphOptimization, str]] = ..., timeout_seconds: _Optional[float] = ..., keep_samples: _Optional[bool] = ...) -> None: ...

class RunBenchmarkRequest(_message.Message):
    __slots__ = ("run_id", "sha256", "settings", "eval_set_sha256", "eval_reference_sha256")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    EVAL_SET_SHA256_FIELD_NUMBER: _ClassVar[int]
    EVAL_REFERENCE_SHA256_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sha256: str
    settings: BenchmarkSettings
    eval_set_sha256: str
    eval_reference_sha256: str
    def __init__(self, run_id: _Optional[str] = ..., sha256: _Optional[str] = ..., settings: _Optional[_Union[BenchmarkSettings, _Mapping]] = ..., eval_set_sha256: _Optional[str] = ..., eval_reference_sha256: _Optional[str] = ...) -> None: ...

class LatencyStats(_message.Message):
    __slots__ = ("count", "mean_ms", "std_ms", "min_ms", "max_ms", "p50_ms", "p90_ms", "p95_ms", "p99_ms", "throughput_per_s", "samples_ms")
    COUNT_FIELD_NUMBER: _ClassVar[int]
    MEAN_MS_FIELD_NUMBER: _ClassVar[int]
    STD_MS_FIELD_NUMBER: _ClassVar[int]
    MIN_MS_FIELD_NUMBER: _ClassVar[int]
    MAX_MS_FIELD_NUMBER: _ClassVar[int]
    P50_MS_FIELD_NUMBER: _ClassVar[int]
    P90_MS_FIELD_NUMBER: _ClassVar[int]
    P95_MS_FIELD_NUMBER: _ClassVar[int]
    P99_MS_FIELD_NUMBER: _ClassVar[int]
    THROUGHPUT_PER_S_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_MS_FIELD_NUMBER: _ClassVar[int]
    count: int
    mean_ms: float
    std_ms: float
    min_ms: float
    max_ms: float
    p50_ms: float
    p90_ms: float
    p95_ms: float
    p99_ms: float
    throughput_per_s: float
    samples_ms: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, count: _Optional[int] = ..., mean_ms: _Optional[float] = ..., std_ms: _Optional[float] = ..., min_ms: _Optional[float] = ..., max_ms: _Optional[float] = ..., p50_ms: _Optional[float] = ..., p90_ms: _Optional[float] = ..., p95_ms: _Optional[float] = ..., p99_ms: _Optional[float] = ..., throughput_per_s: _Optional[float] = ..., samples_ms: _Optional[_Iterable[float]] = ...) -> None: ...

class RunResult(_message.Message):
    __slots__ = ("latency", "load_seconds", "first_inference_ms", "peak_rss_bytes", "baseline_rss_bytes", "state_before", "state_after", "other_cpu_load", "disturbed", "warnings", "runtime", "runtime_version", "settings", "wall_seconds", "output_sample", "evaluation", "confinement")
    LATENCY_FIELD_NUMBER: _ClassVar[int]
    LOAD_SECONDS_FIELD_NUMBER: _ClassVar[int]
    FIRST_INFERENCE_MS_FIELD_NUMBER: _ClassVar[int]
    PEAK_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    BASELINE_RSS_BYTES_FIELD_NUMBER: _ClassVar[int]
    STATE_BEFORE_FIELD_NUMBER: _ClassVar[int]
    STATE_AFTER_FIELD_NUMBER: _ClassVar[int]
    OTHER_CPU_LOAD_FIELD_NUMBER: _ClassVar[int]
    DISTURBED_FIELD_NUMBER: _ClassVar[int]
    WARNINGS_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_FIELD_NUMBER: _ClassVar[int]
    RUNTIME_VERSION_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    WALL_SECONDS_FIELD_NUMBER: _ClassVar[int]
    OUTPUT_SAMPLE_FIELD_NUMBER: _ClassVar[int]
    EVALUATION_FIELD_NUMBER: _ClassVar[int]
    CONFINEMENT_FIELD_NUMBER: _ClassVar[int]
    latency: LatencyStats
    load_seconds: float
    first_inference_ms: float
    peak_rss_bytes: int
    baseline_rss_bytes: int
    state_before: DeviceState
    state_after: DeviceState
    other_cpu_load: float
    disturbed: bool
    warnings: _containers.RepeatedScalarFieldContainer[str]
    runtime: str
    runtime_version: str
    settings: BenchmarkSettings
    wall_seconds: float
    output_sample: _containers.RepeatedScalarFieldContainer[float]
    evaluation: Evaluation
    confinement: str
    def __init__(self, latency: _Optional[_Union[LatencyStats, _Mapping]] = ..., load_seconds: _Optional[float] = ..., first_inference_ms: _Optional[float] = ..., peak_rss_bytes: _Optional[int] = ..., baseline_rss_bytes: _Optional[int] = ..., state_before: _Optional[_Union[DeviceState, _Mapping]] = ..., state_after: _Optional[_Union[DeviceState, _Mapping]] = ..., other_cpu_load: _Optional[float] = ..., disturbed: _Optional[bool] = ..., warnings: _Optional[_Iterable[str]] = ..., runtime: _Optional[str] = ..., runtime_version: _Optional[str] = ..., settings: _Optional[_Union[BenchmarkSettings, _Mapping]] = ..., wall_seconds: _Optional[float] = ..., output_sample: _Optional[_Iterable[float]] = ..., evaluation: _Optional[_Union[Evaluation, _Mapping]] = ..., confinement: _Optional[str] = ...) -> None: ...

class Evaluation(_message.Message):
    __slots__ = ("eval_set_sha256", "samples", "top1_accuracy", "has_reference", "agreement_with_host", "max_abs_diff", "error", "sqnr_db")
    EVAL_SET_SHA256_FIELD_NUMBER: _ClassVar[int]
    SAMPLES_FIELD_NUMBER: _ClassVar[int]
    TOP1_ACCURACY_FIELD_NUMBER: _ClassVar[int]
    HAS_REFERENCE_FIELD_NUMBER: _ClassVar[int]
    AGREEMENT_WITH_HOST_FIELD_NUMBER: _ClassVar[int]
    MAX_ABS_DIFF_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    SQNR_DB_FIELD_NUMBER: _ClassVar[int]
    eval_set_sha256: str
    samples: int
    top1_accuracy: float
    has_reference: bool
    agreement_with_host: float
    max_abs_diff: float
    error: str
    sqnr_db: float
    def __init__(self, eval_set_sha256: _Optional[str] = ..., samples: _Optional[int] = ..., top1_accuracy: _Optional[float] = ..., has_reference: _Optional[bool] = ..., agreement_with_host: _Optional[float] = ..., max_abs_diff: _Optional[float] = ..., error: _Optional[str] = ..., sqnr_db: _Optional[float] = ...) -> None: ...

class RunError(_message.Message):
    __slots__ = ("code", "message")
    CODE_FIELD_NUMBER: _ClassVar[int]
    MESSAGE_FIELD_NUMBER: _ClassVar[int]
    code: str
    message: str
    def __init__(self, code: _Optional[str] = ..., message: _Optional[str] = ...) -> None: ...

class RunEvent(_message.Message):
    __slots__ = ("run_id", "state", "queue_position", "phase", "progress", "result", "error")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    QUEUE_POSITION_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    PROGRESS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    state: RunState
    queue_position: int
    phase: str
    progress: Progress
    result: RunResult
    error: RunError
    def __init__(self, run_id: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., queue_position: _Optional[int] = ..., phase: _Optional[str] = ..., progress: _Optional[_Union[Progress, _Mapping]] = ..., result: _Optional[_Union[RunResult, _Mapping]] = ..., error: _Optional[_Union[RunError, _Mapping]] = ...) -> None: ...

class Progress(_message.Message):
    __slots__ = ("done", "total", "phase")
    DONE_FIELD_NUMBER: _ClassVar[int]
    TOTAL_FIELD_NUMBER: _ClassVar[int]
    PHASE_FIELD_NUMBER: _ClassVar[int]
    done: int
    total: int
    phase: str
    def __init__(self, done: _Optional[int] = ..., total: _Optional[int] = ..., phase: _Optional[str] = ...) -> None: ...

class GetRunRequest(_message.Message):
    __slots__ = ("run_id",)
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    def __init__(self, run_id: _Optional[str] = ...) -> None: ...

class RunRecord(_message.Message):
    __slots__ = ("run_id", "sha256", "state", "settings", "result", "error", "accepted_at", "finished_at", "seq")
    RUN_ID_FIELD_NUMBER: _ClassVar[int]
    SHA256_FIELD_NUMBER: _ClassVar[int]
    STATE_FIELD_NUMBER: _ClassVar[int]
    SETTINGS_FIELD_NUMBER: _ClassVar[int]
    RESULT_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    ACCEPTED_AT_FIELD_NUMBER: _ClassVar[int]
    FINISHED_AT_FIELD_NUMBER: _ClassVar[int]
    SEQ_FIELD_NUMBER: _ClassVar[int]
    run_id: str
    sha256: str
    state: RunState
    settings: BenchmarkSettings
    result: RunResult
    error: RunError
    accepted_at: str
    finished_at: str
    seq: int
    def __init__(self, run_id: _Optional[str] = ..., sha256: _Optional[str] = ..., state: _Optional[_Union[RunState, str]] = ..., settings: _Optional[_Union[BenchmarkSettings, _Mapping]] = ..., result: _Optional[_Union[RunResult, _Mapping]] = ..., error: _Optional[_Union[RunError, _Mapping]] = ..., accepted_at: _Optional[str] = ..., finished_at: _Optional[str] = ..., seq: _Optional[int] = ...) -> None: ...

class ListRunsRequest(_message.Message):
    __slots__ = ("after_seq", "limit")
    AFTER_SEQ_FIELD_NUMBER: _ClassVar[int]
    LIMIT_FIELD_NUMBER: _ClassVar[int]
    after_seq: int
    limit: int
    def __init__(self, after_seq: _Optional[int] = ..., limit: _Optional[int] = ...) -> None: ...

class ListRunsResponse(_message.Message):
    __slots__ = ("runs",)
    RUNS_FIELD_NUMBER: _ClassVar[int]
    runs: _containers.RepeatedCompositeFieldContainer[RunRecord]
    def __init__(self, runs: _Optional[_Iterable[_Union[RunRecord, _Mapping]]] = ...) -> None: ...
