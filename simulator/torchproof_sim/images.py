"""The simulated image registry: what each NGC PyTorch release contains and what it needs to run.

Facts follow shared/reference/ngc-pytorch.md (release table, driver table, CUDA compatibility);
values the reference marks unconfirmed are listed in docs/fleet.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from torchproof.versions import ComputeCapability, DriverVersion

REPOSITORY = "nvcr.io/nvidia/pytorch"


@dataclass(frozen=True)
class Image:
    """One release image: its components and the driver and GPUs its CUDA kernels need."""

    release: str
    torch: str
    cuda: str
    python: str
    cudnn: str
    nccl: str
    apex: bool
    min_driver: DriverVersion
    compat_branches: tuple[DriverVersion, ...]  # lowest accepted version on each forward-compat branch
    min_cc: ComputeCapability

    @property
    def ref(self) -> str:
        return f"{REPOSITORY}:{self.release}-py3"

    @property
    def cuda_short(self) -> str:
        """``torch.version.cuda``: major.minor of the toolkit torch was built with."""
        return ".".join(self.cuda.split(".")[:2])

    @property
    def torch_version(self) -> tuple[int, int]:
        major, minor = self.torch.split(".")[:2]
        return int(major), int(minor)

    @property
    def native_amp(self) -> bool:
        """``torch.cuda.amp`` arrived in PyTorch 1.6."""
        return self.torch_version >= (1, 6)

    @property
    def autocast(self) -> bool:
        """Generic ``torch.autocast`` (bf16) arrived in PyTorch 1.10."""
        return self.torch_version >= (1, 10)

    @property
    def tf32(self) -> bool:
        """``torch.backends.cuda.matmul.allow_tf32`` arrived in PyTorch 1.7."""
        return self.torch_version >= (1, 7)

    @property
    def env(self) -> dict[str, str]:
        return {"NVIDIA_PYTORCH_VERSION": self.release, "CUDA_VERSION": self.cuda}


def _image(release: str, torch: str, cuda: str, python: str, cudnn: str, nccl: str, *, apex: bool,
           min_driver: str, compat: tuple[str, ...], min_cc: str = "6.0") -> Image:
    return Image(
        release=release, torch=torch, cuda=cuda, python=python, cudnn=cudnn, nccl=nccl, apex=apex,
        min_driver=DriverVersion.parse(min_driver),
        compat_branches=tuple(DriverVersion.parse(v) for v in compat),
        min_cc=ComputeCapability.parse(min_cc),
    )


# R418's CUDA forward-compatibility support starts at 418.40.04 (NVIDIA's CUDA compatibility documentation),
# whatever a release's notes abbreviate it to ("418.xx"): the images here take that from NVIDIA, not from the
# profiles under test, so a simulation catches a profile that admits an older 418 driver.
R418 = "418.40.04"
_DC_24 = ("470.57", "525.85", "535.86", "545.23")

IMAGES: dict[str, Image] = {
    image.ref: image
    for image in (
        _image("20.03", "1.5.0a0+8f84ded", "10.2.89", "3.6.10", "7.6.5", "2.6.3", apex=True,
               min_driver="440.33.01", compat=("384.111", "396", "410", R418, "440.30")),
        _image("20.06", "1.6.0a0+9907a3e", "11.0.167", "3.6.10", "8.0.1", "2.7.5", apex=True,
               min_driver="450", compat=(R418, "440.30")),
        _image("20.12", "1.8.0a0+1606899", "11.1.1", "3.8.5", "8.0.5", "2.8.3", apex=True,
               min_driver="455", compat=(R418, "440.30", "450")),
        _image("21.06", "1.9.0a0", "11.3.1", "3.8.8", "8.2.1", "2.9.9", apex=True,
               min_driver="465.19.01", compat=("418.40", "440.33", "450.51", "460.27")),
        _image("23.10", "2.1.0a0+32f93b1", "12.2.2", "3.10.12", "8.9.5.29", "2.19.3", apex=True,
               min_driver="535", compat=("450.51", "470.57", "510.47", "525.85")),
        _image("24.10", "2.5.0a0+e000cf0ad9", "12.6.2", "3.10.12", "9.5.0.50", "2.22.3", apex=False,
               min_driver="560", compat=_DC_24),
        _image("25.01", "2.6.0a0+ecf3bae40a", "12.8.0", "3.12.3", "9.7.0.66", "2.25.1", apex=False,
               min_driver="560", compat=_DC_24, min_cc="7.5"),
    )
}


def lookup_image(ref: str) -> Image | None:
    """The image a pod names, or None: the registry has no such tag and the pull fails."""
    return IMAGES.get(ref.strip())


def driver_runs(image: Image, driver: DriverVersion, *, datacenter: bool) -> bool:
    """Whether CUDA initialises: a new enough driver, or a datacenter board on a forward-compat branch."""
    if driver >= image.min_driver:
        return True
    return datacenter and any(
        driver.branch == compat.branch and driver >= compat for compat in image.compat_branches
    )


def has_kernels(image: Image, cc: ComputeCapability) -> bool:
    """Whether the image's torch was built with kernels this GPU can run."""
    return cc >= image.min_cc
