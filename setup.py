"""The compiled part of the package: kernels of the exact models (probability tables,
the convolutions' rescaling, ELU; selfvae_codec/models/_kernels.c). It is optional:
where no C compiler is found the package installs without it and computes the same
integers in torch, more slowly."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("selfvae_codec.models._kernels", ["selfvae_codec/models/_kernels.c"], optional=True)])
