"""Maps the top-level kernels/ folder onto the unique_asr.kernels package (pyproject cannot compute this)."""

from setuptools import find_packages, setup

kernel_packages = ["unique_asr." + name for name in find_packages(include=["kernels", "kernels.*"])]
setup(
    packages=find_packages(include=["unique_asr", "unique_asr.*"]) + kernel_packages,
    package_dir={"unique_asr": "unique_asr", "unique_asr.kernels": "kernels"},
)
