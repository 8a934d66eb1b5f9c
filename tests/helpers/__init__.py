"""Builders shared by the test modules: tiny models of every family
(:mod:`helpers.tiny_models`) and the training scripts loaded as modules
(:mod:`helpers.scripts`).

Importable as ``helpers`` because pytest puts the folder of ``tests/conftest.py`` on the
import path.
"""
