"""The compiled part of the package: the exact models' probability-table kernel
(selfvae_codec/models/_tables.c). It is optional: where no C compiler is found the
package installs without it and computes the same tables in torch, more slowly."""

from setuptools import Extension, setup

setup(ext_modules=[Extension("selfvae_codec.models._tables", ["selfvae_codec/models/_tables.c"], optional=True)])
