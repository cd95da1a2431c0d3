"""The ``sagaflow`` command: :data:`main` is its click group (see :mod:`sagaflow.cli.app`)."""

from .app import main
from .group import SagaflowGroup
from .loader import Loaded, load, load_imports
from .problems import CliError, DefinitionProblems

__all__ = [
    "CliError",
    "DefinitionProblems",
    "Loaded",
    "SagaflowGroup",
    "load",
    "load_imports",
    "main",
]
