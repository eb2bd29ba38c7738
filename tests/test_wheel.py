"""The package a regulator installs: a wheel that audits a bundle with nothing of the checkout.

The wheel is built from the working tree (``pip wheel`` without build isolation, so offline)
and installed into a fresh virtual environment outside the checkout. The dependencies come
from the test's own environment through a ``.pth`` line naming its site-packages: that adds the
directory to ``sys.path`` without running the ``.pth`` files in it, so the editable install's
finder (which would import ``consortium`` from the checkout) stays out. The commands then run
from a directory outside the checkout with a PATH holding only the new environment, so neither
node nor solc can be reached: the installed ``consortium`` must load its compiled contracts
from the package and audit a bundle against an anvil node.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from audit_scenario import run_scenario

from consortium.chain.anvil import AnvilNode
from consortium.chain.artifacts import CONTRACTS
from consortium.chain.rpc import RpcChain

pytestmark = [pytest.mark.slow, pytest.mark.anvil]

CHECKOUT = Path(__file__).resolve().parents[1]
TIMEOUT = 120
SITE_PACKAGES = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
IMPORTED_FROM = (
    "import consortium, consortium.chain.artifacts as a\n"
    "print(consortium.__file__, a.ARTIFACTS_DIR)"
)
LOAD_ARTIFACTS = (
    "from consortium.chain.artifacts import all_artifacts\n"
    "print(*(a.name for a in all_artifacts() if a.deployed_bytecode.startswith('0x60')))"
)


def run(command: list[str | Path], cwd: Path, env: dict[str, str] | None = None) -> str:
    """The stdout of ``command``, which must succeed."""
    done = subprocess.run(
        [str(part) for part in command],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert done.returncode == 0, (command, done.stdout, done.stderr)
    return done.stdout


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel of the working tree, built from a copy so that the build leaves no ``build/``
    or egg-info behind in the checkout."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy2(CHECKOUT / name, source / name)
    shutil.copytree(
        CHECKOUT / "consortium", source / "consortium", ignore=shutil.ignore_patterns("__pycache__")
    )
    dist = root / "dist"
    pip_wheel = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation"]
    run([*pip_wheel, "--no-index", "--quiet", "-w", dist, source], cwd=root)
    (built,) = dist.glob("consortium-*.whl")
    return built


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed and this environment's
    dependencies (not its editable ``consortium``) behind it on ``sys.path``."""
    venv = tmp_path_factory.mktemp("venv") / "regulator"
    run([sys.executable, "-m", "venv", "--without-pip", venv], cwd=venv.parent)
    python = venv / "bin" / "python"
    pip_install = [sys.executable, "-m", "pip", "--python", python, "install", "--no-deps"]
    # Installed before the .pth exists, so pip sees no consortium already installed.
    run([*pip_install, "--no-index", "--quiet", wheel], cwd=venv.parent)
    site_packages = Path(run([python, "-c", SITE_PACKAGES], cwd=venv.parent).strip())
    ours = dict.fromkeys(sysconfig.get_paths()[key] for key in ("purelib", "platlib"))
    (site_packages / "zz_test_dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    return venv


@pytest.fixture
def outside(tmp_path: Path, venv: Path) -> tuple[Path, dict[str, str]]:
    """A working directory outside the checkout, and an environment whose PATH holds only the
    new virtual environment (no node, no solc) and no setting of the caller's."""
    assert not tmp_path.resolve().is_relative_to(CHECKOUT)
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("CONSORTIUM_", "PYTHON", "VIRTUAL_ENV"))
    }
    env.update(PATH=str(venv / "bin"), HOME=str(tmp_path), MPLCONFIGDIR=str(tmp_path / "mpl"))
    return tmp_path, env


def test_the_wheel_holds_the_compiled_contracts_and_no_compiler_input(wheel: Path) -> None:
    names = zipfile.ZipFile(wheel).namelist()
    assert "consortium/py.typed" in names
    for name in CONTRACTS:
        assert f"consortium/chain/contracts/{name}.json" in names
    assert not [n for n in names if n.endswith((".sol", ".js"))]
    assert not [n for n in names if "__pycache__" in n or n.startswith(("tests/", "contracts/"))]
    entry_points = next(n for n in names if n.endswith(".dist-info/entry_points.txt"))
    assert (
        "consortium = consortium.cli.main:main"
        in zipfile.ZipFile(wheel).read(entry_points).decode()
    )


def test_the_installed_package_audits_a_bundle_without_the_checkout(
    venv: Path,
    outside: tuple[Path, dict[str, str]],
    anvil_node: AnvilNode,
    anvil_chain: RpcChain,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    cwd, env = outside
    python = venv / "bin" / "python"

    where = run([python, "-c", IMPORTED_FROM], cwd=cwd, env=env).split()
    assert [Path(p).resolve().is_relative_to(venv.resolve()) for p in where] == [True, True]
    assert run([python, "-c", LOAD_ARTIFACTS], cwd=cwd, env=env).split() == list(CONTRACTS)

    scenario = run_scenario(anvil_chain, tmp_path_factory.mktemp("regulator-job"))
    consortium = venv / "bin" / "consortium"
    report = run(
        [consortium, "audit", scenario.bundle, "--chain", anvil_node.url], cwd=cwd, env=env
    )
    assert report.rstrip().splitlines()[-1].startswith("VERIFIED: every check holds"), report

    # Compiling needs the sources of a checkout, and says so in one line.
    compiled = subprocess.run(
        [consortium, "compile", "--check"],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
        check=False,
    )
    assert compiled.returncode == 2, compiled.stderr
    assert compiled.stderr.startswith("error: no Solidity sources in "), compiled.stderr
    assert len(compiled.stderr.splitlines()) == 1
