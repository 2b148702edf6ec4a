"""torchproof probe: measures one GPU node from inside an NVIDIA PyTorch release image.

The pod mounts this file (and pynvml.py) read-only and runs it with the image's own Python, which may
be anything from 3.6 with PyTorch 1.5 to today: so it imports only the standard library, torch and
pynvml, and stays free of syntax newer than 3.6. It observes and measures; the operator judges
(docs/contract.md). Every check runs in its own daemon thread, so an exception or a hang costs that
check alone and a result is always written.
"""
import argparse
import copy
import importlib
import json
import math
import os
import platform
import re
import sys
import threading
import time
import traceback

PROBE_VERSION = "1.0"
PLAN_SCHEMA = "torchproof.dev/probe-plan/v1"
RESULT_SCHEMA = "torchproof.dev/probe-result/v1"
PLAN_ENV = "TORCHPROOF_PLAN"
HOOKS_ENV = "TORCHPROOF_PROBE_TEST_HOOKS"
DEFAULT_RESULT_PATH = "/dev/termination-log"
MAX_RESULT_BYTES = 4096
MAX_TEXT = 200
MAX_DEVICES = 8
# What the operator refuses in a result string (docs/contract.md): control characters but tab, newline and
# carriage return, lone surrogates and noncharacters. An exception's text may hold any of them.
NOT_TEXT = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\ud800-\udfff\ufdd0-\ufdef%s]" % "".join(
    chr(plane * 0x10000 + 0xFFFE) + chr(plane * 0x10000 + 0xFFFF) for plane in range(17)))
CHECK_ORDER = ("environment", "gpu", "cuda", "amp", "tensorCores", "channelsLast", "conv3d", "multiGpu", "sdpa",
               "fp8", "nccl", "memory", "compile")
RELEASE_VARS = (
    "NVIDIA_PYTORCH_VERSION", "PYTORCH_VERSION", "PYTORCH_BUILD_VERSION", "CUDA_VERSION",
    "CUDA_DRIVER_VERSION", "CUDNN_VERSION", "NCCL_VERSION", "CUBLAS_VERSION", "TRT_VERSION",
    "TENSORRT_VERSION", "NVIDIA_BUILD_ID", "TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE",
)
# NGC images force TF32 into "fp32" matmuls; both must be off before CUDA starts for a true fp32 baseline.
TF32_OVERRIDES = ("TORCH_ALLOW_TF32_CUBLAS_OVERRIDE", "NVIDIA_TF32_OVERRIDE")
DEFAULT_CHECKS = {
    "environment": {}, "gpu": {}, "cuda": {},
    "amp": {"steps": 8, "native": True, "apex": True, "bf16": True},
    "tensorCores": {"size": 4096, "iterations": 20},
    "channelsLast": {"iterations": 3},
    "conv3d": {"iterations": 5},
    "multiGpu": {},
    "sdpa": {},
    "fp8": {"size": 2048},
    "nccl": {"sizeMiB": 64, "iterations": 10},
    "memory": {"fraction": 0.8, "maxSeconds": 20},
    "compile": {"maxSeconds": 90},
}
# The CPU dry run exercises the same code paths; these caps keep it to a few seconds.
CPU_CAPS = {"tensorCores": {"size": 256, "iterations": 5}, "conv3d": {"iterations": 2},
            "channelsLast": {"iterations": 2}}
COUNTS = {("amp", "steps"), ("tensorCores", "size"), ("tensorCores", "iterations"),
          ("channelsLast", "iterations"), ("conv3d", "iterations"), ("fp8", "size"), ("nccl", "sizeMiB"),
          ("nccl", "iterations"), ("memory", "maxSeconds"), ("compile", "maxSeconds")}
FLAGS = {("amp", "native"), ("amp", "apex"), ("amp", "bf16")}
FRACTIONS = {("memory", "fraction")}
# A check with maxSeconds is cut off (status timeout) this long after it, whatever budget is left.
BOUND_GRACE = 2.0
SDPA_BACKENDS = (("flash", "FLASH_ATTENTION", "enable_flash"), ("memEfficient", "EFFICIENT_ATTENTION",
                 "enable_mem_efficient"), ("math", "MATH", "enable_math"))
# inductor's C++ build takes most of a minute on a small CPU; aot_eager runs dynamo and AOTAutograd in seconds.
CPU_COMPILE_BACKEND = "aot_eager"
CPU_MEMORY_MIB = 64
MEMORY_CHUNK_MIB = 256
FP8_MAX = 448.0  # the largest float8_e4m3fn


class PlanError(ValueError):
    """The plan is unusable; the message names the field."""


class Skip(Exception):
    """The check does not apply here; its message is the reason."""


def describe(exc):
    # type: (BaseException) -> str
    """The contract's error text: "TypeName: message", at most 200 characters."""
    text = "%s: %s" % (type(exc).__name__, exc)
    return text[:MAX_TEXT]


# -- plan ------------------------------------------------------------------------------------------


def parse_plan(text):
    # type: (Optional[str]) -> dict
    """The plan with defaults filled in, or PlanError naming the bad field. No plan means all checks."""
    if text is None:
        return {"device": "cuda", "budget": 120.0, "resultPath": None, "inject": {},
                "checks": copy.deepcopy(DEFAULT_CHECKS)}
    try:
        plan = json.loads(text)
    except ValueError as exc:
        raise PlanError("%s: not JSON (%s)" % (PLAN_ENV, exc)) from None
    if not isinstance(plan, dict):
        raise PlanError("%s: expected an object" % PLAN_ENV)
    if plan.get("schema") != PLAN_SCHEMA:
        raise PlanError("%s.schema: expected %r, got %r" % (PLAN_ENV, PLAN_SCHEMA, plan.get("schema")))
    device = plan.get("device", "cuda")
    if device not in ("cpu", "cuda"):
        raise PlanError("%s.device: expected \"cpu\" or \"cuda\", got %r" % (PLAN_ENV, device))
    budget = plan.get("timeBudgetSeconds", 120)
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0 < budget < 86400:
        raise PlanError("%s.timeBudgetSeconds: expected a positive number of seconds, got %r" % (PLAN_ENV, budget))
    result_path = plan.get("resultPath")
    if result_path is not None and not (isinstance(result_path, str) and result_path):
        raise PlanError("%s.resultPath: expected a file path, got %r" % (PLAN_ENV, result_path))
    inject = plan.get("inject", {})
    if not isinstance(inject, dict):
        raise PlanError("%s.inject: expected an object" % PLAN_ENV)
    raw_checks = plan.get("checks")
    if not isinstance(raw_checks, dict):
        raise PlanError("%s.checks: expected an object" % PLAN_ENV)
    checks = {}
    for name in CHECK_ORDER:
        if name in raw_checks:
            checks[name] = _check_config(name, raw_checks[name])
    return {"device": device, "budget": float(budget), "resultPath": result_path, "inject": inject,
            "checks": checks}


def _check_config(name, raw):
    # type: (str, object) -> dict
    where = "%s.checks.%s" % (PLAN_ENV, name)
    if not isinstance(raw, dict):
        raise PlanError("%s: expected an object" % where)
    config = dict(DEFAULT_CHECKS[name])
    for key in config:
        if key not in raw:
            continue
        value = raw[key]
        if (name, key) in COUNTS and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise PlanError("%s.%s: expected a positive integer, got %r" % (where, key, value))
        if (name, key) in FLAGS and not isinstance(value, bool):
            raise PlanError("%s.%s: expected true or false, got %r" % (where, key, value))
        if (name, key) in FRACTIONS and (isinstance(value, bool) or not isinstance(value, (int, float))
                                         or not 0 < value < 1):
            raise PlanError("%s.%s: expected a number between 0 and 1, got %r" % (where, key, value))
        config[key] = value
    return config


def capped(config, name, device):
    # type: (dict, str, str) -> dict
    """The check's settings, with the CPU caps applied in CPU mode."""
    if device != "cpu":
        return config
    out = dict(config)
    for key, cap in CPU_CAPS.get(name, {}).items():
        out[key] = min(out[key], cap)
    return out


# -- shared state and helpers ----------------------------------------------------------------------


class Probe(object):
    """What the checks of one run share: torch, the device, test hooks, and what earlier checks learned."""

    def __init__(self, torch, device, hooks=None, release_vars=None):
        self.torch = torch
        self.device = device
        self.hooks = hooks or {}
        self.release_vars = release_vars or {}
        self.env = None  # type: Optional[dict]
        self.gpu = None  # type: Optional[dict]
        self.detail = {}  # type: dict
        self._cuda_error = None  # type: Optional[str]
        self._cuda_started = False

    def cuda_error(self):
        # type: () -> Optional[str]
        """Start CUDA once and remember why it failed: every GPU check then skips with the same cause."""
        if not self._cuda_started:
            self._cuda_started = True
            try:
                self.torch.cuda.init()
                if not self.torch.cuda.is_available():
                    raise RuntimeError("torch.cuda.is_available() is False")
            except Exception as exc:
                self._cuda_error = describe(exc)
        return self._cuda_error

    def need_cuda(self):
        # type: () -> None
        if self.device == "cuda" and self.cuda_error() is not None:
            raise Skip("cuda unavailable")

    def sync(self):
        # type: () -> None
        if self.device == "cuda":
            self.torch.cuda.synchronize()


class _Nothing(object):
    """contextlib.nullcontext, which Python 3.6 lacks."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def finite(value):
    # type: (object) -> bool
    return isinstance(value, (int, float)) and math.isfinite(value)


def rel_error(torch, got, want):
    """Largest deviation relative to the reference's scale (pointwise ratios explode near zero)."""
    got, want = got.detach().float().cpu(), want.detach().float().cpu()
    if not (bool(torch.isfinite(got).all()) and bool(torch.isfinite(want).all())):
        return None
    scale = max(float(want.abs().max()), 1e-12)
    return float((got - want).abs().max()) / scale


def amp_dtype(p):
    """fp16 on the GPU; bf16 on the CPU, where autocast only knows bf16."""
    return p.torch.float16 if p.device == "cuda" else p.torch.bfloat16


def autocast_api(torch, device, dtype):
    # type: (object, str, object) -> tuple
    """(name, factory) for the newest autocast this torch has: torch.autocast (1.10+), else the per-device
    torch.cuda.amp (1.6+) / torch.cpu.amp. Raises Skip when there is none (20.03 has only Apex)."""
    generic = getattr(torch, "autocast", None)
    if generic is not None:
        return "torch.autocast", lambda: generic(device_type=device, dtype=dtype)
    legacy = getattr(getattr(getattr(torch, device, None), "amp", None), "autocast", None)
    if legacy is None:
        raise Skip("no autocast for %s in torch %s" % (device, torch.__version__))
    if device == "cuda" and dtype == torch.float16:
        return "torch.cuda.amp", lambda: legacy()
    return "torch.%s.amp" % device, lambda: legacy(dtype=dtype)


def grad_scaler(torch, device):
    # type: (object, str) -> tuple
    """(name, scaler): torch.amp.GradScaler (2.3+), else torch.cuda.amp.GradScaler, disabled off CUDA as it
    would disable itself there."""
    generic = getattr(getattr(torch, "amp", None), "GradScaler", None)
    if generic is not None:
        return "torch.amp.GradScaler", generic(device)
    legacy = getattr(getattr(torch.cuda, "amp", None), "GradScaler", None)
    if legacy is None:
        raise Skip("no GradScaler in torch %s" % torch.__version__)
    return "torch.cuda.amp.GradScaler", legacy(enabled=device == "cuda")


def bf16_support(torch, device):
    # type: (object, str) -> tuple
    """(supported, why not): bf16 needs torch.bfloat16, and on CUDA compute capability 8.0+ and torch 1.10+."""
    if not hasattr(torch, "bfloat16"):
        return False, "torch %s has no bfloat16" % torch.__version__
    if device == "cpu":
        return True, None
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 0):
        return False, "compute capability %d.%d < 8.0" % (major, minor)
    if getattr(torch, "autocast", None) is None:
        return False, "torch %s has no bf16 autocast" % torch.__version__
    return True, None


def toy_model(p, channels):
    """A small conv + BN + linear net: enough layers for autocast to cast both convs and GEMMs."""
    nn = p.torch.nn
    p.torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.Conv2d(channels, channels, 3, padding=1), nn.BatchNorm2d(channels), nn.ReLU(),
        nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(channels * 4, 10),
    ).to(p.device)


def toy_batch(p, batch, side):
    torch = p.torch
    torch.manual_seed(1)
    x = torch.randn(batch, 3, side, side).to(p.device)
    y = torch.randint(0, 10, (batch,)).to(p.device)
    return x, y


# -- checks: each takes (probe, settings) and returns its numbers, or raises -----------------------


def check_environment(p, cfg):
    torch = p.torch
    cudnn = None
    try:
        cudnn = _dotted_version(torch.backends.cudnn.version())
    except Exception as exc:
        p.detail["cudnnError"] = describe(exc)
    nccl = None
    try:
        nccl = _dotted_version(torch.cuda.nccl.version())
    except Exception as exc:
        p.detail["ncclError"] = describe(exc)
    try:
        import apex  # noqa: F401  (whether the release still ships it)
        has_apex = True
    except Exception:
        has_apex = False
    p.env = {"python": platform.python_version(), "torch": str(torch.__version__),
             "cuda": getattr(torch.version, "cuda", None), "cudnn": cudnn, "nccl": nccl, "apex": has_apex,
             "vars": dict(p.release_vars)}
    return {}


def _dotted_version(value):
    # type: (object) -> Optional[str]
    """cuDNN/NCCL versions as "8.0.1": ints encode MAJOR*1000 (cuDNN < 9, NCCL < 2.9: 8001, 2708) or
    MAJOR*10000 (90500, 21903); newer torch gives NCCL as a tuple."""
    if value is None:
        return None
    if isinstance(value, (tuple, list)):
        return ".".join(str(part) for part in value)
    value = int(value)
    base = 10000 if value >= 10000 else 1000
    return "%d.%d.%d" % (value // base, value % base // 100, value % 100)


def check_gpu(p, cfg):
    if p.device == "cpu":
        p.gpu = {"source": "none", "driver": None, "cudaDriver": None, "count": 0, "devices": [],
                 "note": "cpu mode: NVML not queried"}
        return {}
    try:
        import pynvml
    except Exception as exc:
        p.gpu = gpu_from_torch(p, "pynvml not importable (%s)" % describe(exc))
        return {}
    try:
        p.gpu = gpu_from_nvml(pynvml)
    except Exception as exc:
        p.gpu = gpu_from_torch(p, "NVML failed (%s)" % describe(exc))
    return {}


def _text(value):
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def gpu_from_nvml(nvml):
    """Driver, CUDA driver and per-device facts from NVML; a field NVML cannot give is null."""
    nvml.nvmlInit()
    try:
        def ask(fn, *args):
            try:
                return getattr(nvml, fn)(*args)
            except Exception:
                return None

        cuda_driver = ask("nvmlSystemGetCudaDriverVersion") or ask("nvmlSystemGetCudaDriverVersion_v2")
        brands = dict((getattr(nvml, n), n[len("NVML_BRAND_"):]) for n in dir(nvml)
                      if n.startswith("NVML_BRAND_") and n != "NVML_BRAND_COUNT")
        count = nvml.nvmlDeviceGetCount()
        devices = []
        for index in range(min(count, MAX_DEVICES)):
            h = nvml.nvmlDeviceGetHandleByIndex(index)
            cc = ask("nvmlDeviceGetCudaComputeCapability", h)
            memory = ask("nvmlDeviceGetMemoryInfo", h)
            ecc = ask("nvmlDeviceGetEccMode", h)
            mig = ask("nvmlDeviceGetMigMode", h)
            brand = ask("nvmlDeviceGetBrand", h)
            uuid = ask("nvmlDeviceGetUUID", h)
            devices.append({
                "index": index, "name": _text(nvml.nvmlDeviceGetName(h)),
                "brand": _brand_name(brands.get(brand)) if brand is not None else None,
                "uuid": _text(uuid) if uuid is not None else None,
                "cc": "%d.%d" % tuple(cc) if cc is not None else None,
                "memoryMiB": int(memory.total) // (1 << 20) if memory is not None else None,
                "ecc": bool(ecc[0]) if ecc is not None else None,
                "eccErrors": ask("nvmlDeviceGetTotalEccErrors", h, nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                 nvml.NVML_VOLATILE_ECC) if ecc is not None and ecc[0] else None,
                "mig": bool(mig[0]) if mig is not None else None,
            })
        return {"source": "nvml", "driver": _text(nvml.nvmlSystemGetDriverVersion()),
                "cudaDriver": "%d.%d" % (cuda_driver // 1000, cuda_driver % 1000 // 10) if cuda_driver else None,
                "count": count, "devices": devices}
    finally:
        nvml.nvmlShutdown()


def _brand_name(raw):
    # type: (Optional[str]) -> Optional[str]
    names = {"TESLA": "Tesla", "GEFORCE": "GeForce", "QUADRO": "Quadro", "TITAN": "Titan", "NVIDIA": "NVIDIA"}
    return None if raw is None else names.get(raw, raw.replace("_", " "))


def gpu_from_torch(p, why):
    """The fallback when NVML cannot answer: devices from torch.cuda, driver from the kernel module."""
    torch = p.torch
    notes = [why, "used torch.cuda and /proc/driver/nvidia/version"]
    driver = None
    try:
        with open("/proc/driver/nvidia/version") as f:
            match = re.search(r"Kernel Module(?: for \S+)?\s+(\d+\.\d+(?:\.\d+)?)", f.read())
        driver = match.group(1) if match else None
    except (IOError, OSError) as exc:
        notes.append("no driver version (%s)" % type(exc).__name__)
    devices = []
    count = None
    try:
        count = torch.cuda.device_count()
        for index in range(min(count, MAX_DEVICES)):
            props = torch.cuda.get_device_properties(index)
            devices.append({"index": index, "name": props.name, "cc": "%d.%d" % (props.major, props.minor),
                            "memoryMiB": int(props.total_memory) // (1 << 20)})
    except Exception as exc:
        notes.append("torch.cuda failed (%s)" % describe(exc))
    return {"source": "torch", "driver": driver, "cudaDriver": None, "count": count, "devices": devices,
            "note": "; ".join(notes)[:MAX_TEXT]}


def check_cuda(p, cfg):
    if p.device == "cpu":
        raise Skip("cpu mode")
    torch = p.torch
    error = p.cuda_error()
    if error is not None:
        return {"status": "error", "available": False, "error": error}
    n = 256
    a = torch.full((n, n), 2.0, device="cuda")
    b = torch.full((n, n), 3.0, device="cuda")
    c = torch.mm(a, b)
    torch.cuda.synchronize()
    return {"available": True, "kernelOk": bool((c == 6.0 * n).all()), "devices": torch.cuda.device_count()}


def check_amp(p, cfg):
    p.need_cuda()
    torch = p.torch
    runs = {}
    steps = cfg["steps"]
    if cfg["native"]:
        runs["native"] = _sub_run(lambda: amp_native(p, steps, amp_dtype(p), scaled=True))
    else:
        runs["native"] = {"skipped": "not in the plan"}
    if not cfg["apex"]:
        runs["apex"] = {"skipped": "not in the plan"}
    else:
        runs["apex"] = _sub_run(lambda: amp_apex(p, steps))
    if not cfg["bf16"]:
        runs["bf16"] = {"skipped": "not in the plan"}
    else:
        supported, why = bf16_support(torch, p.device)
        runs["bf16"] = (_sub_run(lambda: amp_native(p, steps, torch.bfloat16, scaled=False)) if supported
                        else {"skipped": why})
    return runs


def _sub_run(fn):
    try:
        return fn()
    except Skip as why:
        return {"skipped": str(why)[:MAX_TEXT]}
    except Exception as exc:
        return {"error": describe(exc)}


def amp_native(p, steps, dtype, scaled):
    """A few training steps under native autocast, with a GradScaler when asked (fp16) or without (bf16)."""
    torch = p.torch
    name, autocast = autocast_api(torch, p.device, dtype)
    stepper = _plain_step
    if scaled:
        scaler_name, scaler = grad_scaler(torch, p.device)
        if not scaler_name.startswith(name):
            name = "%s+%s" % (name, scaler_name)
        stepper = _scaled_step(scaler)
    return train(p, steps, name, str(dtype).replace("torch.", ""), autocast, stepper)


def _plain_step(loss, opt):
    loss.backward()
    opt.step()
    return 0


def _scaled_step(scaler):
    def step(loss, opt):
        before = scaler.get_scale()
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()
        return 1 if scaler.get_scale() < before else 0  # the scaler backs off exactly when it skips a step
    return step


def amp_apex(p, steps):
    """Apex AMP at O2 (no global patching of torch functions, which would leak into later checks)."""
    if p.device != "cuda":
        raise Skip("apex amp needs cuda")
    try:
        from apex import amp
    except Exception as exc:
        raise Skip("apex not importable (%s)" % describe(exc)) from None

    def setup(model, opt):
        return amp.initialize(model, opt, opt_level="O2", verbosity=0)

    def scale():
        return float(amp._amp_state.loss_scalers[0].loss_scale())

    def step(loss, opt):
        before = scale()
        with amp.scale_loss(loss, opt) as scaled:
            scaled.backward()
        opt.step()
        return 1 if scale() < before else 0

    return train(p, steps, "apex.amp", "float16", _Nothing, step, setup)


class PlainSGD(object):
    """Just enough optimizer for GradScaler: torch.optim imports torch._dynamo on first use in torch 2.x,
    which costs seconds before the first step."""

    def __init__(self, torch, params, lr):
        self.torch = torch
        self.param_groups = [{"params": list(params), "lr": lr}]

    def zero_grad(self):
        for param in self.param_groups[0]["params"]:
            param.grad = None

    def step(self):
        with self.torch.no_grad():
            for group in self.param_groups:
                for param in group["params"]:
                    if param.grad is not None:
                        param.add_(param.grad, alpha=-group["lr"])


def train(p, steps, api, dtype_name, autocast, step, setup=None):
    """Train the toy net on one fixed batch: losses should be finite and fall; the first mixed-precision
    output is compared with the fp32 output of identical weights."""
    torch = p.torch
    big = p.device == "cuda"
    model = toy_model(p, 32 if big else 8)
    x, y = toy_batch(p, 32 if big else 8, 32 if big else 12)
    with torch.no_grad():
        want = copy.deepcopy(model)(x)
    if setup is None:
        opt = PlainSGD(torch, model.parameters(), lr=0.1)
    else:
        model, opt = setup(model, torch.optim.SGD(model.parameters(), lr=0.1))
    if p.hooks.get("ampNaN"):
        x = x * float("nan")
    loss_fn = torch.nn.CrossEntropyLoss()
    losses, skipped, got = [], 0, None
    for _ in range(steps):
        opt.zero_grad()
        with autocast():
            out = model(x)
            loss = loss_fn(out.float(), y)
        if got is None:
            got = out
        skipped += step(loss, opt)
        losses.append(float(loss.detach()))
    p.sync()
    p.detail.setdefault("ampLosses", {})["%s/%s" % (api, dtype_name)] = losses
    all_finite = all(finite(v) for v in losses) and bool(torch.isfinite(got).all())
    return {"api": api, "dtype": dtype_name, "steps": steps, "firstLoss": losses[0], "lastLoss": losses[-1],
            "finite": all_finite, "decreased": all_finite and losses[-1] < losses[0],
            "maxRelError": rel_error(torch, got, want), "skippedSteps": skipped}


def check_tensor_cores(p, cfg):
    """GEMM TFLOP/s per precision against a true fp32 baseline (TF32 off; see TF32_OVERRIDES)."""
    p.need_cuda()
    torch = p.torch
    n, iterations = cfg["size"], cfg["iterations"]
    fp32 = gemm_tflops(p, torch.float32, n, iterations)
    fp16 = gemm_tflops(p, torch.float16, n, iterations) if p.device == "cuda" else None
    supported, _ = bf16_support(torch, p.device)
    bf16 = gemm_tflops(p, torch.bfloat16, n, iterations) if supported else None
    return {"size": n, "iterations": iterations, "fp32": fp32, "fp16": fp16, "bf16": bf16, "tf32": None,
            "fp16Speedup": _ratio(fp16, fp32), "bf16Speedup": _ratio(bf16, fp32), "tf32Speedup": None}


def _ratio(a, b):
    return a / b if a is not None and b else None


def gemm_tflops(p, dtype, n, iterations):
    """Throughput of n x n x n matmuls after warm-up: CUDA events on the GPU, the wall clock on the CPU."""
    torch = p.torch
    torch.manual_seed(0)
    a = torch.randn(n, n, device=p.device).to(dtype)
    b = torch.randn(n, n, device=p.device).to(dtype)
    c = torch.mm(a, b)
    for _ in range(3):
        torch.mm(a, b, out=c)
    p.sync()
    if p.device == "cuda":
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(iterations):
            torch.mm(a, b, out=c)
        end.record()
        end.synchronize()
        seconds = start.elapsed_time(end) / 1000.0
    else:
        t0 = time.perf_counter()
        for _ in range(iterations):
            torch.mm(a, b, out=c)
        seconds = time.perf_counter() - t0
    return 2.0 * n ** 3 * iterations / max(seconds, 1e-9) / 1e12


def check_channels_last(p, cfg):
    """The toy net in channels_last and in the default format under AMP must agree (Ampere cuDNN NaN race)."""
    p.need_cuda()
    torch = p.torch
    try:
        _, autocast = autocast_api(torch, p.device, amp_dtype(p))
    except Skip:
        autocast = _Nothing
    big = p.device == "cuda"
    model = toy_model(p, 64 if big else 8).eval()
    fast = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x, _ = toy_batch(p, 32 if big else 4, 64 if big else 12)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    worst, all_finite = 0.0, True
    with torch.no_grad():
        for _ in range(cfg["iterations"]):
            with autocast():
                want, got = model(x), fast(x_cl)
            err = rel_error(torch, got, want)
            if err is None:
                all_finite = False
            else:
                worst = max(worst, err)
    p.sync()
    return {"finite": all_finite, "maxRelError": worst if all_finite else None,
            "iterations": cfg["iterations"]}


def check_conv3d(p, cfg):
    """cuDNN 3D convolution with benchmark mode on, counting NaNs (FFT-tiled algorithms raced in 20.06)."""
    p.need_cuda()
    torch = p.torch
    big = p.device == "cuda"
    torch.manual_seed(0)
    conv = torch.nn.Conv3d(8, 16, 5, padding=2).to(p.device)
    x = torch.randn(2 if big else 1, 8, 24 if big else 6, 48 if big else 8, 48 if big else 8).to(p.device)
    cudnn = torch.backends.cudnn
    previous = cudnn.benchmark
    cudnn.benchmark = True
    nans = 0
    try:
        with torch.no_grad():
            for _ in range(cfg["iterations"]):
                nans += int(torch.isnan(conv(x)).sum())
        p.sync()
    finally:
        cudnn.benchmark = previous
    return {"iterations": cfg["iterations"], "nanCount": nans}


def check_multi_gpu(p, cfg):
    """Peer access and an in-process NCCL all-reduce (torch.cuda.nccl: one process, 1.5 to 2.x alike)."""
    if p.device == "cpu":
        raise Skip("cpu mode")
    p.need_cuda()
    torch = p.torch
    n = torch.cuda.device_count()
    if n < 2:
        raise Skip("%d GPU in the pod" % n)
    can_peer = getattr(torch.cuda, "can_device_access_peer", None)
    peer = None
    if can_peer is not None:
        peer = all(can_peer(i, j) for i in range(n) for j in range(n) if i != j)
    tensors = [torch.full((1 << 22,), float(i + 1), device="cuda:%d" % i) for i in range(n)]
    t0 = time.perf_counter()
    torch.cuda.nccl.all_reduce(tensors)
    for i in range(n):
        torch.cuda.synchronize(i)
    seconds = time.perf_counter() - t0
    want = n * (n + 1) / 2.0
    return {"devices": n, "peerAccess": peer, "allReduceOk": all(bool((t == want).all()) for t in tensors),
            "allReduceSeconds": seconds}


def check_sdpa(p, cfg):
    """scaled_dot_product_attention forward and backward with each backend against an fp32 reference."""
    p.need_cuda()
    torch = p.torch
    if getattr(torch.nn.functional, "scaled_dot_product_attention", None) is None:
        raise Skip("torch %s has no scaled_dot_product_attention" % torch.__version__)
    cuda = p.device == "cuda"
    dtype = torch.float16 if cuda else torch.float32
    torch.manual_seed(0)
    shape = (4, 8, 256, 64) if cuda else (2, 4, 64, 32)
    q, k, v, grad = [torch.randn(shape, device=p.device) for _ in range(4)]
    want = _attention(torch, [q, k, v], grad, lambda q_, k_, v_: torch.softmax(
        q_ @ k_.transpose(-2, -1) / math.sqrt(shape[-1]), dim=-1) @ v_)
    out = {"dtype": str(dtype).replace("torch.", "")}
    for name, kind, flag in SDPA_BACKENDS:
        if not cuda and name != "math":
            out[name] = {"skipped": "cpu mode"}
            continue
        out[name] = _sub_run(lambda: _sdpa_backend(p, (name, kind, flag), [q, k, v], grad, dtype, want))
    return out


def _attention(torch, inputs, grad, fn):
    """(output, gradients of q, k, v) of fn on fresh leaves."""
    leaves = [t.detach().clone().requires_grad_(True) for t in inputs]
    result = fn(*leaves)
    result.backward(grad.to(result.dtype))
    return [result.detach()] + [t.grad.detach() for t in leaves]


def _sdpa_context(torch, backend):
    """Only this backend: torch.nn.attention.sdpa_kernel (2.3+), else torch.backends.cuda.sdp_kernel (2.0+)."""
    name, kind, flag = backend
    try:
        attention = importlib.import_module("torch.nn.attention")
    except ImportError:
        attention = None
    if attention is not None and hasattr(attention, "sdpa_kernel"):
        return attention.sdpa_kernel(getattr(attention.SDPBackend, kind))
    legacy = getattr(torch.backends.cuda, "sdp_kernel", None)
    if legacy is None:
        raise Skip("no way to choose the attention backend in torch %s" % torch.__version__)
    return legacy(**dict((f, f == flag) for _, _, f in SDPA_BACKENDS))


def _sdpa_backend(p, backend, inputs, grad, dtype, want):
    torch = p.torch
    sdpa = torch.nn.functional.scaled_dot_product_attention
    try:
        with _sdpa_context(torch, backend):
            got = _attention(torch, [t.to(dtype) for t in inputs], grad, sdpa)
    except RuntimeError as exc:
        if "No available kernel" in str(exc):
            raise Skip(describe(exc)) from None
        raise
    errors = [rel_error(torch, g, w) for g, w in zip(got, want)]
    return {"forwardError": errors[0], "backwardError": None if None in errors[1:] else max(errors[1:])}


def check_fp8(p, cfg):
    """An e4m3 matmul through torch._scaled_mm against the bf16 product of the same quantised inputs."""
    if p.device == "cpu":
        raise Skip("cpu mode")
    p.need_cuda()
    torch = p.torch
    scaled_mm, e4m3 = getattr(torch, "_scaled_mm", None), getattr(torch, "float8_e4m3fn", None)
    if scaled_mm is None or e4m3 is None:
        raise Skip("torch %s has no torch._scaled_mm" % torch.__version__)
    major, minor = torch.cuda.get_device_capability()
    if (major, minor) < (8, 9):
        raise Skip("compute capability %d.%d < 8.9" % (major, minor))
    n = max(16, cfg["size"] // 16 * 16)
    torch.manual_seed(0)
    a, b = torch.randn(n, n, device="cuda"), torch.randn(n, n, device="cuda")
    scale_a, scale_b = (a.abs().max() / FP8_MAX).float(), (b.abs().max() / FP8_MAX).float()
    a8 = (a / scale_a).to(e4m3)
    b8 = (b / scale_b).to(e4m3).t().contiguous().t()  # column-major, as the FP8 GEMM wants its second operand

    def fp8_mm():
        out = scaled_mm(a8, b8, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16)
        return out[0] if isinstance(out, tuple) else out  # (out, amax) before PyTorch 2.4

    got = fp8_mm()
    want = torch.mm(a8.to(torch.bfloat16), b8.to(torch.bfloat16)).float() * (scale_a * scale_b)
    iterations = 10
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iterations):
        fp8_mm()
    end.record()
    end.synchronize()
    seconds = start.elapsed_time(end) / 1000.0
    return {"size": n, "dtype": "float8_e4m3fn", "relError": rel_error(torch, got, want),
            "tflops": 2.0 * n ** 3 * iterations / max(seconds, 1e-9) / 1e12}


def check_nccl(p, cfg):
    """An in-process NCCL all-reduce across every GPU of the pod: its sum, and its bus bandwidth."""
    if p.device == "cpu":
        raise Skip("cpu mode")
    p.need_cuda()
    torch = p.torch
    n = torch.cuda.device_count()
    if n < 2:
        raise Skip("%d GPU in the pod" % n)
    numel = cfg["sizeMiB"] * (1 << 20) // 4
    tensors = [torch.ones(numel, device="cuda:%d" % i) for i in range(n)]
    torch.cuda.nccl.all_reduce(tensors)
    for i in range(n):
        torch.cuda.synchronize(i)
    ok = all(bool((t == float(n)).all()) for t in tensors)
    iterations = cfg["iterations"]
    t0 = time.perf_counter()
    for _ in range(iterations):
        torch.cuda.nccl.all_reduce(tensors)
    for i in range(n):
        torch.cuda.synchronize(i)
    each = (time.perf_counter() - t0) / iterations
    alg = numel * 4 / max(each, 1e-9) / 1e9
    return {"devices": n, "sizeMiB": cfg["sizeMiB"], "iterations": iterations, "ok": ok, "algBandwidth": alg,
            "busBandwidth": alg * 2.0 * (n - 1) / n}


def check_memory(p, cfg):
    """Fill a fraction of each GPU's free memory with a known sequence and read it back, within maxSeconds
    (half to fill, half to verify); NVML's uncorrected ECC count is read before and after."""
    p.need_cuda()
    torch = p.torch
    started = time.monotonic()
    fill_until, verify_until = started + cfg["maxSeconds"] / 2.0, started + cfg["maxSeconds"]
    if p.device == "cpu":
        targets, free_total = [("cpu", CPU_MEMORY_MIB)], None
    else:
        torch.cuda.empty_cache()  # what the earlier checks left cached is free memory to test
        targets, free_total = [], 0
        for i in range(torch.cuda.device_count()):
            free = _free_mib(torch, i)
            free_total += free
            targets.append(("cuda:%d" % i, int(free * cfg["fraction"])))
    ecc_before = _ecc_uncorrected(p)
    tested, wrong, complete = 0, 0, True
    for device, mib in targets:
        chunks, filled = _fill(torch, device, mib, fill_until)
        covered, bad, verified = _verify(torch, chunks, verify_until)
        del chunks  # the last reference: the memory goes back before the next GPU
        if device != "cpu":
            torch.cuda.empty_cache()
        tested, wrong, complete = tested + covered, wrong + bad, complete and filled and verified
    ecc_after = _ecc_uncorrected(p)
    ecc = ecc_after - ecc_before if ecc_before is not None and ecc_after is not None else None
    return {"devices": len(targets) if p.device == "cuda" else 0, "freeMiB": free_total, "testedMiB": tested,
            "mismatches": wrong, "eccErrors": ecc, "complete": complete}


def _fill(torch, device, mib, until):
    # type: (object, str, int, float) -> tuple
    """(chunks of (tensor, seed), whether all of `mib` was filled before `until` or memory ran out)."""
    chunks, done = [], 0
    while done < mib:
        if time.monotonic() > until:
            return chunks, False
        step = min(MEMORY_CHUNK_MIB, mib - done)
        seed = 7919 * len(chunks) + 1
        try:
            chunks.append((torch.arange(step << 18, dtype=torch.int32, device=device).add_(seed), seed))
        except RuntimeError as exc:
            if "out of memory" not in str(exc):
                raise
            return chunks, False
        done += step
    return chunks, True


def _verify(torch, chunks, until):
    # type: (object, list, float) -> tuple
    """(MiB read back, words wrong, whether every chunk was read before `until`): each chunk's sum is known."""
    covered, wrong = 0, 0
    for chunk, seed in chunks:
        if time.monotonic() > until:
            return covered, wrong, False
        numel = chunk.numel()
        if int(chunk.sum(dtype=torch.int64)) != numel * (numel - 1) // 2 + seed * numel:
            wrong += _count_wrong(torch, chunk, seed)
        covered += numel * 4 >> 20
    return covered, wrong, True


def _free_mib(torch, index):
    """Free memory of one GPU: torch.cuda.mem_get_info (1.11+), else what torch has not reserved."""
    info = getattr(torch.cuda, "mem_get_info", None)
    if info is not None:
        return int(info(index)[0]) >> 20
    total = torch.cuda.get_device_properties(index).total_memory
    return int(total - torch.cuda.memory_reserved(index)) >> 20


def _count_wrong(torch, chunk, seed):
    """Words of a chunk whose sum was wrong that differ from the sequence, 1 MiB of reference at a time."""
    step, wrong = 1 << 18, 0
    for offset in range(0, chunk.numel(), step):
        part = chunk[offset:offset + step]
        want = torch.arange(offset, offset + part.numel(), dtype=torch.int32, device=chunk.device).add_(seed)
        wrong += int((part != want).sum())
    return wrong


def _ecc_uncorrected(p):
    # type: (Probe) -> Optional[int]
    """The volatile uncorrected ECC count NVML gives, summed over the GPUs; None without NVML or ECC."""
    if p.device == "cpu":
        return None
    try:
        import pynvml as nvml
        nvml.nvmlInit()
    except Exception:
        return None
    try:
        total = 0
        for i in range(nvml.nvmlDeviceGetCount()):
            total += int(nvml.nvmlDeviceGetTotalEccErrors(nvml.nvmlDeviceGetHandleByIndex(i),
                                                          nvml.NVML_MEMORY_ERROR_TYPE_UNCORRECTED,
                                                          nvml.NVML_VOLATILE_ECC))
        return total
    except Exception:
        return None
    finally:
        nvml.nvmlShutdown()


def check_compile(p, cfg):
    """torch.compile of the toy model (inductor; aot_eager on a CPU) against eager; the first call is timed."""
    p.need_cuda()
    torch = p.torch
    compile_fn = getattr(torch, "compile", None)
    if compile_fn is None:
        raise Skip("torch %s has no torch.compile" % torch.__version__)
    backend = "inductor" if p.device == "cuda" else CPU_COMPILE_BACKEND
    big = p.device == "cuda"
    model = toy_model(p, 16 if big else 8).eval()
    x, _ = toy_batch(p, 8 if big else 4, 32 if big else 12)
    compiled = compile_fn(model, backend=backend)
    with torch.no_grad():
        want = model(x)
        t0 = time.perf_counter()
        got = compiled(x)
        p.sync()
        first = time.perf_counter() - t0
    return {"backend": backend, "firstSeconds": first, "maxError": rel_error(torch, got, want)}


CHECKS = {
    "environment": check_environment, "gpu": check_gpu, "cuda": check_cuda, "amp": check_amp,
    "tensorCores": check_tensor_cores, "channelsLast": check_channels_last, "conv3d": check_conv3d,
    "multiGpu": check_multi_gpu, "sdpa": check_sdpa, "fp8": check_fp8, "nccl": check_nccl, "memory": check_memory,
    "compile": check_compile,
}


# -- running, budget and result --------------------------------------------------------------------


def run_check(p, name, cfg, timeout):
    # type: (Probe, str, dict, float) -> dict
    """Run one check in a daemon thread; an exception becomes `error`, outliving `timeout` becomes `timeout`."""
    box = {}

    def target():
        try:
            if p.hooks.get("hang") == name:
                threading.Event().wait()
            if p.hooks.get("raise") == name:
                raise RuntimeError("injected by test hook")
            box["out"] = CHECKS[name](p, cfg)
        except Skip as why:
            box["out"] = {"status": "skipped", "reason": str(why)[:MAX_TEXT]}
        except BaseException as exc:
            p.detail.setdefault("tracebacks", {})[name] = traceback.format_exc()
            box["out"] = {"status": "error", "error": describe(exc)}

    started = time.monotonic()
    thread = threading.Thread(target=target, name="torchproof-check-" + name)
    thread.daemon = True
    thread.start()
    thread.join(timeout)
    seconds = time.monotonic() - started
    if thread.is_alive():
        return {"status": "timeout", "seconds": seconds}
    out = {"status": "ok", "seconds": seconds}
    out.update(box["out"])
    return out


def run_checks(p, checks, deadline):
    # type: (Probe, dict, float) -> dict
    """All planned checks in contract order; once the budget is spent the rest are `skipped`."""
    results = {}
    for name in CHECK_ORDER:
        if name not in checks:
            continue
        left = deadline - time.monotonic()
        if left <= 0:
            results[name] = {"status": "skipped", "seconds": 0.0, "reason": "time budget spent"}
        else:
            cfg = capped(checks[name], name, p.device)
            bound = cfg.get("maxSeconds")
            results[name] = run_check(p, name, cfg, left if bound is None else min(left, bound + BOUND_GRACE))
        print("torchproof-probe: %-12s %-7s %7.2fs" % (name, results[name]["status"], results[name]["seconds"]))
        sys.stdout.flush()
    return results


def clean(value, limit=MAX_TEXT):
    """JSON-safe and compact: non-finite numbers become null, floats keep 4 significant digits,
    strings lose what is not text (to U+FFFD) and are cut to `limit` characters."""
    if isinstance(value, dict):
        return dict((k, clean(v, limit)) for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return [clean(v, limit) for v in value]
    if isinstance(value, float):
        return float("%.4g" % value) if math.isfinite(value) else None
    if isinstance(value, str):
        return NOT_TEXT.sub("\ufffd", value)[:limit]
    return value


def encode(result):
    # type: (dict) -> bytes
    return json.dumps(result, separators=(",", ":"), allow_nan=False).encode("utf-8")


def fit(result):
    # type: (dict) -> bytes
    """The compact result within 4096 bytes: drop env.vars, then device detail, then shorten texts."""
    result = clean(result)
    data = encode(result)
    env, gpu = result.get("env") or {}, result.get("gpu") or {}
    shrinkers = [
        lambda: env.pop("vars", None),
        lambda: gpu.update(devices=[dict((k, d.get(k)) for k in ("index", "name", "cc"))
                                    for d in gpu.get("devices") or []],
                           note="device detail dropped to fit 4096 bytes"),
        lambda: gpu.pop("devices", None),
        lambda: result.update(clean(result, 60)),
    ]
    for shrink in shrinkers:
        if len(data) <= MAX_RESULT_BYTES:
            break
        shrink()
        data = encode(result)
    return data


def build_result(p, checks, seconds):
    # type: (Probe, dict, float) -> dict
    result = {"schema": RESULT_SCHEMA, "probe": PROBE_VERSION, "device": p.device, "seconds": seconds}
    if p.env is not None:
        result["env"] = p.env
    if p.gpu is not None:
        result["gpu"] = p.gpu
    result["checks"] = checks
    return result


def prepare_torch():
    """Import torch with the TF32 overrides off, and keep fp32 reference maths in true fp32."""
    for name in TF32_OVERRIDES:
        os.environ[name] = "0"
    import torch
    matmul = getattr(getattr(torch.backends, "cuda", None), "matmul", None)
    if hasattr(matmul, "allow_tf32"):
        matmul.allow_tf32 = False
    if hasattr(torch.backends.cudnn, "allow_tf32"):
        torch.backends.cudnn.allow_tf32 = False
    return torch


def main(argv=None):
    # type: (Optional[list]) -> int
    started = time.monotonic()
    parser = argparse.ArgumentParser(description="torchproof probe (plan from $%s)" % PLAN_ENV)
    parser.add_argument("--device", choices=("cpu", "cuda"), help="overrides the plan's device")
    parser.add_argument("--result", help="where to write the compact result (default: the plan's resultPath)")
    args = parser.parse_args(argv)
    release_vars = dict((k, os.environ[k]) for k in RELEASE_VARS if k in os.environ)
    try:
        plan = parse_plan(os.environ.get(PLAN_ENV))
    except PlanError as exc:
        sys.stderr.write("torchproof-probe: bad plan: %s\n" % exc)
        return 2
    device = args.device or plan["device"]
    hooks = plan["inject"] if os.environ.get(HOOKS_ENV) == "1" else {}
    path = args.result or plan["resultPath"] or DEFAULT_RESULT_PATH
    try:
        torch = prepare_torch()
    except Exception as exc:
        p = Probe(None, device, release_vars=release_vars)
        checks = dict((name, {"status": "error", "seconds": 0.0, "error": describe(exc)})
                      for name in CHECK_ORDER if name in plan["checks"])
    else:
        p = Probe(torch, device, hooks, release_vars)
        checks = run_checks(p, plan["checks"], started + plan["budget"])
    result = build_result(p, checks, time.monotonic() - started)
    data = fit(result)
    print("torchproof-probe detail: " + json.dumps(clean({"result": result, "detail": p.detail}, 100000)))
    try:
        with open(path, "wb") as f:
            f.write(data)
    except (IOError, OSError) as exc:
        sys.stderr.write("torchproof-probe: cannot write the result to %s: %s\n" % (path, exc))
        return 3
    return 0


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    if any(t.name.startswith("torchproof-check-") for t in threading.enumerate()):
        os._exit(code)  # a check that outlived the budget may hold the GPU: do not wait for it
    sys.exit(code)
