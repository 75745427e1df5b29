"""No code path can unpickle or evaluate untrusted bytes: an ``ast`` scan of mla/, inspector/ and workers/.

Refused anywhere in the packages:

* ``pickle`` / ``cPickle`` / ``_pickle`` / ``dill`` / ``cloudpickle`` / ``joblib`` / ``marshal`` / ``shelve``,
  except catching ``pickle.UnpicklingError`` (what ``torch.load(..., weights_only=True)`` raises);
* the built-ins ``eval``, ``exec`` and ``compile``;
* ``torch.load`` without ``weights_only=True`` (or with a ``pickle_module``), and ``torch.jit.load``;
* ``numpy.load(..., allow_pickle=True)``, ``yaml.load`` / ``yaml.full_load`` / ``yaml.unsafe_load``
  (``yaml.safe_load`` only), ``pandas.read_pickle``.

A regression fails here with the file, line and rule; the scanner itself is checked on known-bad snippets.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("mla", "inspector", "workers")
PICKLERS = {"pickle", "cPickle", "_pickle", "dill", "cloudpickle", "joblib", "marshal", "shelve"}
ALLOWED_PICKLE_NAMES = {"UnpicklingError", "PickleError", "PicklingError"}
BUILTINS = {"eval", "exec", "compile"}
UNSAFE_YAML = {"load", "full_load", "unsafe_load", "load_all", "full_load_all", "unsafe_load_all"}


def _dotted(node: ast.expr) -> str | None:
    """``torch.serialization.load`` for the call target ``torch.serialization.load``; None for anything else."""
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
        return ".".join(reversed(parts))
    return None


def _keyword(call: ast.Call, name: str) -> ast.expr | None:
    return next((k.value for k in call.keywords if k.arg == name), None)


def _is_true(node: ast.expr | None) -> bool:
    return isinstance(node, ast.Constant) and node.value is True


def scan(source: str, filename: str = "<source>") -> list[str]:
    """Every finding in one module, as ``file:line: rule``."""
    tree = ast.parse(source, filename)
    aliases: dict[str, str] = {}  # local name -> module or ``module.name`` it stands for
    findings: list[str] = []

    def flag(node: ast.AST, rule: str) -> None:
        findings.append(f"{filename}:{getattr(node, 'lineno', 0)}: {rule}")

    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                aliases[alias.asname or top] = alias.name if alias.asname else top
        elif isinstance(node, ast.ImportFrom) and node.module:
            root = node.module.split(".")[0]
            for alias in node.names:
                aliases[alias.asname or alias.name] = f"{node.module}.{alias.name}"
                if root in PICKLERS and alias.name not in ALLOWED_PICKLE_NAMES:
                    flag(node, f"imports {alias.name} from {node.module}")

    def resolve(node: ast.expr) -> str | None:
        dotted = _dotted(node)
        if dotted is None:
            return None
        head, _, rest = dotted.partition(".")
        full = aliases.get(head, head)
        return f"{full}.{rest}" if rest else full

    attribute_bases = {id(n.value) for n in ast.walk(tree) if isinstance(n, ast.Attribute)}
    for node in ast.walk(tree):
        module = aliases.get(node.id, "") if isinstance(node, ast.Name) else ""
        bare = module.split(".")[0] in PICKLERS and id(node) not in attribute_bases  # not `pickle.X`: the module itself
        if bare and module.split(".")[-1] not in ALLOWED_PICKLE_NAMES:
            flag(node, f"uses {module} (only its exception classes may be used)")
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
            module = aliases.get(node.value.id, "")
            if module.split(".")[0] in PICKLERS and node.attr not in ALLOWED_PICKLE_NAMES:
                flag(node, f"uses {module}.{node.attr}")
        if not isinstance(node, ast.Call):
            continue
        if isinstance(node.func, ast.Name) and node.func.id in BUILTINS and node.func.id not in aliases:
            flag(node, f"calls the built-in {node.func.id}()")
        target = resolve(node.func)
        if target in ("torch.load", "torch.serialization.load"):
            if not _is_true(_keyword(node, "weights_only")):
                flag(node, "torch.load without weights_only=True")
            if _keyword(node, "pickle_module") is not None:
                flag(node, "torch.load with a pickle_module")
        elif target == "torch.jit.load":
            flag(node, "torch.jit.load (TorchScript archives are not weights-only)")
        elif target in ("numpy.load", "np.load") and _is_true(_keyword(node, "allow_pickle")):
            flag(node, "numpy.load with allow_pickle=True")
        elif target is not None and target.startswith("yaml.") and target.split(".", 1)[1] in UNSAFE_YAML:
            flag(node, f"{target} (use yaml.safe_load)")
        elif target in ("pandas.read_pickle", "pd.read_pickle"):
            flag(node, "pandas.read_pickle")
    return findings


def package_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (REPO / package).rglob("*.py"))


def test_the_packages_never_unpickle_or_evaluate() -> None:
    files = package_files()
    assert len(files) > 50  # the scan really saw the source tree
    findings = [f for path in files for f in scan(path.read_text(), str(path.relative_to(REPO)))]
    assert findings == [], "unsafe loading or evaluation:\n" + "\n".join(findings)


def test_every_torch_load_in_the_packages_is_weights_only() -> None:
    calls = 0
    for path in package_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and _dotted(node.func) == "torch.load":
                calls += 1
                assert _is_true(_keyword(node, "weights_only")), f"{path}:{node.lineno}"
    assert calls >= 3  # mla.model (load_model, load_metadata), mla.train.checkpoint, mla.pretrain


@pytest.mark.parametrize(
    ("snippet", "rule"),
    [
        ("import pickle\npickle.loads(data)", "uses pickle.loads"),
        ("import pickle as p\np.load(f)", "uses pickle.load"),
        ("from pickle import loads", "imports loads from pickle"),
        ("import dill\ndill.loads(b)", "uses dill.loads"),
        ("import marshal\nmarshal.loads(b)", "uses marshal.loads"),
        ("import pickle\nf(pickle)", "uses pickle (only its exception classes may be used)"),
        ("eval(text)", "calls the built-in eval()"),
        ("exec(code)", "calls the built-in exec()"),
        ("compile(src, 'f', 'exec')", "calls the built-in compile()"),
        ("import torch\ntorch.load(p)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=False)", "torch.load without weights_only=True"),
        ("import torch\ntorch.load(p, weights_only=flag)", "torch.load without weights_only=True"),
        ("from torch import load\nload(p)", "torch.load without weights_only=True"),
        ("import torch as t\nt.load(p, weights_only=True, pickle_module=m)", "torch.load with a pickle_module"),
        ("import torch\ntorch.jit.load(p)", "torch.jit.load"),
        ("import numpy as np\nnp.load(p, allow_pickle=True)", "numpy.load with allow_pickle=True"),
        ("import yaml\nyaml.load(text, Loader=yaml.Loader)", "yaml.load (use yaml.safe_load)"),
        ("import yaml\nyaml.unsafe_load(text)", "yaml.unsafe_load"),
        ("import pandas as pd\npd.read_pickle(p)", "pandas.read_pickle"),
    ],
)
def test_the_scanner_catches(snippet: str, rule: str) -> None:
    findings = scan(snippet)
    assert any(rule in f for f in findings), findings


@pytest.mark.parametrize(
    "snippet",
    [
        "import torch\ntorch.load(p, map_location='cpu', weights_only=True)",
        "import pickle\ntry:\n    pass\nexcept pickle.UnpicklingError:\n    pass",
        "from pickle import UnpicklingError",
        "model.eval()",
        "import re\nre.compile('x')",
        "import numpy as np\nnp.load(p)",
        "import yaml\nyaml.safe_load(text)",
        "import importlib\nimportlib.import_module('workers.commands.worker')",
    ],
)
def test_the_scanner_lets_safe_code_pass(snippet: str) -> None:
    assert scan(snippet) == []
