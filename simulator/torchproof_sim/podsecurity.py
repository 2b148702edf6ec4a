"""Pod Security admission as the API server applies it on pod create: the `baseline` and `restricted` levels.

A namespace labelled `pod-security.kubernetes.io/enforce: <level>` refuses pods that break the level with
403 Forbidden and the server's message: ``pods "x" is forbidden: violates PodSecurity "restricted:latest":
runAsNonRoot != true (pod or container "probe" must set securityContext.runAsNonRoot=true), ...``.
The checks are the server's (k8s.io/pod-security-admission, level `latest`), in its order and wording,
for the fields a pod can carry here; AppArmor, SELinux options and Windows host processes are not checked.
As on the server, a restricted check replaces the baseline check it tightens (capabilities, volumes,
seccomp), and an enforce label that is not a level enforces `restricted`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

ENFORCE_LABEL = "pod-security.kubernetes.io/enforce"
VERSION_LABEL = "pod-security.kubernetes.io/enforce-version"
LEVELS = ("privileged", "baseline", "restricted")

BASELINE_CAPABILITIES = frozenset({
    "AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD", "NET_BIND_SERVICE", "SETFCAP",
    "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT",
})
SAFE_SYSCTLS = frozenset({
    "kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
    "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
    "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
    "net.ipv4.tcp_keepalive_probes",
})
RESTRICTED_VOLUMES = frozenset({
    "configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim", "projected", "secret",
})
GOOD_SECCOMP = ("RuntimeDefault", "Localhost")

Pod = Mapping[str, Any]
Check = Callable[[Pod], "str | None"]  # the detail of a violation, or None


def _spec(pod: Pod) -> Mapping[str, Any]:
    return pod.get("spec") or {}


def _containers(pod: Pod) -> list[Mapping[str, Any]]:
    spec = _spec(pod)
    return [c for key in ("initContainers", "containers", "ephemeralContainers") for c in spec.get(key) or []]


def _context(obj: Mapping[str, Any]) -> Mapping[str, Any]:
    return obj.get("securityContext") or {}


def _names(kind: str, names: Sequence[str]) -> str:
    """`container "a"` or `containers "a", "b"`, as the server words it."""
    quoted = ", ".join(f'"{n}"' for n in names)
    return f"{kind}s {quoted}" if len(names) > 1 else f"{kind} {quoted}"


def _where(containers: Iterable[Mapping[str, Any]], test: Callable[[Mapping[str, Any]], bool]) -> list[str]:
    return [str(c.get("name", "")) for c in containers if test(c)]


def _verb(names: Sequence[str], one: str, many: str) -> str:
    return many if len(names) > 1 else one


# ---- baseline ------------------------------------------------------------------------------------------


def _host_namespaces(pod: Pod) -> str | None:
    spec = _spec(pod)
    found = [f"{key}=true" for key in ("hostNetwork", "hostPID", "hostIPC") if spec.get(key) is True]
    return ", ".join(found) or None


def _privileged(pod: Pod) -> str | None:
    bad = _where(_containers(pod), lambda c: _context(c).get("privileged") is True)
    return f"{_names('container', bad)} must not set securityContext.privileged=true" if bad else None


def _capabilities_baseline(pod: Pod) -> str | None:
    return "; ".join(_added_beyond(pod, BASELINE_CAPABILITIES)) or None


def _added_beyond(pod: Pod, allowed: frozenset[str]) -> list[str]:
    parts = []
    for c in _containers(pod):
        added = [str(a) for a in (_context(c).get("capabilities") or {}).get("add") or []]
        extra = ", ".join(f'"{a}"' for a in added if a not in allowed)
        if extra:
            name = c.get("name", "")
            parts.append(f'container "{name}" must not include {extra} in securityContext.capabilities.add')
    return parts


def _volume_type(volume: Mapping[str, Any]) -> str | None:
    return next((key for key in volume if key != "name"), None)


def _host_path_volumes(pod: Pod) -> str | None:
    bad = [str(v.get("name", "")) for v in _spec(pod).get("volumes") or [] if "hostPath" in v]
    return _names("volume", bad) if bad else None


def _host_ports(pod: Pod) -> str | None:
    parts = []
    for c in _containers(pod):
        ports = [str(p["hostPort"]) for p in c.get("ports") or [] if p.get("hostPort")]
        if ports:
            parts.append(f'container "{c.get("name", "")}" uses {_verb(ports, "hostPort", "hostPorts")} '
                         f'{", ".join(ports)}')
    return "; ".join(parts) or None


def _proc_mount(pod: Pod) -> str | None:
    parts = [f'container "{c.get("name", "")}" must not set securityContext.procMount to "{_context(c)["procMount"]}"'
             for c in _containers(pod) if _context(c).get("procMount") not in (None, "Default")]
    return "; ".join(parts) or None


def _seccomp_type(obj: Mapping[str, Any]) -> str | None:
    profile = _context(obj).get("seccompProfile") or {}
    kind = profile.get("type")
    return str(kind) if kind is not None else None


def _seccomp_baseline(pod: Pod) -> str | None:
    parts = []
    if _seccomp_type(_spec(pod)) == "Unconfined":
        parts.append('pod must not set securityContext.seccompProfile.type to "Unconfined"')
    bad = _where(_containers(pod), lambda c: _seccomp_type(c) == "Unconfined")
    if bad:
        parts.append(f'{_names("container", bad)} must not set securityContext.seccompProfile.type to "Unconfined"')
    return "; ".join(parts) or None


def _sysctls(pod: Pod) -> str | None:
    names = [str(s.get("name", "")) for s in _context(_spec(pod)).get("sysctls") or []]
    bad = [n for n in names if n not in SAFE_SYSCTLS]
    return ", ".join(bad) or None


# ---- restricted ----------------------------------------------------------------------------------------


def _allow_privilege_escalation(pod: Pod) -> str | None:
    bad = _where(_containers(pod), lambda c: _context(c).get("allowPrivilegeEscalation") is not False)
    return f"{_names('container', bad)} must set securityContext.allowPrivilegeEscalation=false" if bad else None


def _capabilities_restricted(pod: Pod) -> str | None:
    parts = []
    containers = _containers(pod)
    no_drop = _where(containers, lambda c: "ALL" not in ((_context(c).get("capabilities") or {}).get("drop") or []))
    if no_drop:
        parts.append(f'{_names("container", no_drop)} must set securityContext.capabilities.drop=["ALL"]')
    parts += _added_beyond(pod, frozenset({"NET_BIND_SERVICE"}))
    return "; ".join(parts) or None


def _restricted_volumes(pod: Pod) -> str | None:
    by_type: dict[str, list[str]] = {}
    for volume in _spec(pod).get("volumes") or []:
        kind = _volume_type(volume)
        if kind is not None and kind not in RESTRICTED_VOLUMES:
            by_type.setdefault(kind, []).append(str(volume.get("name", "")))
    parts = [f'{_names("volume", names)} {_verb(names, "uses", "use")} restricted volume type "{kind}"'
             for kind, names in by_type.items()]
    return "; ".join(parts) or None


def _run_as_non_root(pod: Pod) -> str | None:
    parts = []
    pod_value = _context(_spec(pod)).get("runAsNonRoot")
    if pod_value is False:
        parts.append("pod must not set securityContext.runAsNonRoot=false")
    containers = _containers(pod)
    explicit = _where(containers, lambda c: _context(c).get("runAsNonRoot") is False)
    if explicit:
        parts.append(f"{_names('container', explicit)} must not set securityContext.runAsNonRoot=false")
    implicit = _where(containers, lambda c: _context(c).get("runAsNonRoot") is None)
    if implicit and pod_value is None:  # a container without its own value inherits the pod's
        parts.append(f"pod or {_names('container', implicit)} must set securityContext.runAsNonRoot=true")
    return "; ".join(parts) or None


def _run_as_user(pod: Pod) -> str | None:
    parts = []
    if _context(_spec(pod)).get("runAsUser") == 0:
        parts.append("pod must not set runAsUser=0")
    bad = _where(_containers(pod), lambda c: _context(c).get("runAsUser") == 0)
    if bad:
        parts.append(f"{_names('container', bad)} must not set runAsUser=0")
    return "; ".join(parts) or None


def _seccomp_restricted(pod: Pod) -> str | None:
    parts = []
    pod_type = _seccomp_type(_spec(pod))
    if pod_type is not None and pod_type not in GOOD_SECCOMP:
        parts.append(f'pod must not set securityContext.seccompProfile.type to "{pod_type}"')
    containers = _containers(pod)
    bad = [c for c in containers if _seccomp_type(c) is not None and _seccomp_type(c) not in GOOD_SECCOMP]
    for kind in dict.fromkeys(str(_seccomp_type(c)) for c in bad):
        names = [str(c.get("name", "")) for c in bad if _seccomp_type(c) == kind]
        parts.append(f'{_names("container", names)} must not set securityContext.seccompProfile.type to "{kind}"')
    unset = _where(containers, lambda c: _seccomp_type(c) is None)
    if unset and pod_type is None:  # a container without its own profile inherits the pod's
        parts.append(f'pod or {_names("container", unset)} must set securityContext.seccompProfile.type to '
                     '"RuntimeDefault" or "Localhost"')
    return "; ".join(parts) or None


# (reason, check) in the server's order
BASELINE: tuple[tuple[str, Check], ...] = (
    ("host namespaces", _host_namespaces),
    ("privileged", _privileged),
    ("non-default capabilities", _capabilities_baseline),
    ("hostPath volumes", _host_path_volumes),
    ("hostPort", _host_ports),
    ("procMount", _proc_mount),
    ("seccompProfile", _seccomp_baseline),
    ("forbidden sysctls", _sysctls),
)
# (reason, check, the reason of the baseline check it replaces)
RESTRICTED: tuple[tuple[str, Check, str | None], ...] = (
    ("allowPrivilegeEscalation != false", _allow_privilege_escalation, None),
    ("unrestricted capabilities", _capabilities_restricted, "non-default capabilities"),
    ("restricted volume types", _restricted_volumes, "hostPath volumes"),
    ("runAsNonRoot != true", _run_as_non_root, None),
    ("runAsUser=0", _run_as_user, None),
    ("seccompProfile", _seccomp_restricted, "seccompProfile"),
)


def violations(pod: Pod, level: str) -> list[str]:
    """`reason (detail)` for each check of the level the pod breaks, in the server's order."""
    if level == "privileged":
        return []
    checks: list[tuple[str, Check]] = list(BASELINE)
    if level == "restricted":
        replaced = {old for _, _, old in RESTRICTED if old is not None}
        checks = [(r, c) for r, c in checks if r not in replaced]
        checks += [(r, c) for r, c, _ in RESTRICTED]
    found = []
    for reason, check in checks:
        detail = check(pod)
        if detail:
            found.append(f"{reason} ({detail})")
    return found


def enforced(namespace_labels: Mapping[str, str]) -> tuple[str, str] | None:
    """(level, version) a namespace enforces, or None; a label that is not a level enforces `restricted`."""
    level = namespace_labels.get(ENFORCE_LABEL)
    if level is None:
        return None
    version = namespace_labels.get(VERSION_LABEL) or "latest"
    return (level if level in LEVELS else "restricted"), version


def forbidden_message(pod: Pod, namespace_labels: Mapping[str, str]) -> str | None:
    """The 403's message for a pod this namespace refuses, or None when it is admitted."""
    policy = enforced(namespace_labels)
    if policy is None:
        return None
    level, version = policy
    found = violations(pod, level)
    if not found:
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    return f'pods "{name}" is forbidden: violates PodSecurity "{level}:{version}": {", ".join(found)}'
