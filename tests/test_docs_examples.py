"""Every example in README.md and docs/**/*.md runs, as written, top to bottom per page.

The rules (docs writers: read these before adding a code block)
----------------------------------------------------------------

Fenced blocks (```lang or ~~~lang) are classified by their language word:

* ``python`` -- EXECUTED. The python blocks of one page share one namespace and
  run in one fresh Python process, in page order (so jaxlayers' process-level
  state is what a reader who pastes the page into one interpreter gets).
* ``bash`` -- EXECUTED with ``bash -euo pipefail -c``, in the same working
  directory, in page order with the python blocks (a bash block between two
  python blocks runs between them). ``jaxlayers`` is on PATH (the directory of
  the Python running the tests, e.g. ``.venv/bin``) and ``PYTHONPATH`` is the
  repository root. A command that needs several devices or processes sets
  their environment itself, as a user would (``JAX_NUM_CPU_DEVICES=8 jaxlayers
  train ...``; two processes started with ``&`` and ``wait``).
* ``text``, ``console``, ``json``, ``toml``, ``yaml``, ``csv``, ``ini`` -- shown,
  never run: program output, file contents, and the long commands that produced
  published figures (with the machine they ran on). They must not contain a
  shell or Python prompt (a line starting ``$ ``, ``% ``, ``>>> `` or ``In [``):
  a prompted command is a command a reader will run, so it belongs in a
  ``bash``/``python`` block -- or, if it is a long figure-producing run, in a
  ``text`` block without the prompt.
* MyST directives (``{note}``, ``{toctree}``, ...) are not code, except the code
  directives ``{code-block}``, ``{code}``, ``{code-cell}``, ``{literalinclude}``,
  which are rejected with an executable language (write a plain fence).
* Anything else -- no language at all, ``sh``, ``shell``, ``zsh``, ``py``,
  ``python3``, ``pycon``, ``ipython``, ``shell-session``, an unknown word -- FAILS
  the page's test: no example can silently escape execution by its spelling.

Each page runs in its own fresh temporary directory (``runs/`` etc. land
there), one pytest test per page, so ``pytest-xdist`` spreads the pages.

Markers (HTML comments, invisible in the rendered page)
-------------------------------------------------------

``<!-- docs-test: own-process env=NAME=VALUE ... -->`` on the line(s) just above
a ``python`` block: that block runs in its own fresh Python process (not the
page's shared namespace), with the given environment variables added. For code
that must start a process afresh, e.g. ``jax.distributed.initialize`` or a
device count set before JAX starts.

``<!-- docs-setup`` ... ``-->``: a hidden Python block (the comment's body),
run first in the page's shared namespace. Only where truly needed.

Excluded, by name: README.md's first ``bash`` block (the two set-up commands:
they create a venv and install; ``.ci/run`` runs them itself, and the second
one is the command that runs this test).

Failure messages name the page, the block's first line number, the block's
source and the tail of its output.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXECUTED = ("python", "bash")
SHOWN = ("text", "console", "json", "toml", "yaml", "csv", "ini")
CODE_DIRECTIVES = ("{code-block}", "{code}", "{code-cell}", "{literalinclude}", "{sourcecode}")
PROMPT = re.compile(r"^\s*(\$ |% |>>> |In \[)")
PAGE_TIMEOUT_S = 600
EXCLUDED = {
    ("README.md", 0): "the two set-up commands (create .venv, pip install, run pytest): CI runs them itself",
}


def pages() -> list[Path]:
    found = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    return [p for p in found if "_build" not in p.parts]


@dataclass
class Block:
    lang: str
    line: int  # 1-based line of the opening fence
    source: str
    own_process: bool = False
    env: dict[str, str] = field(default_factory=dict)


FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>[^`]*)$")
MARKER = re.compile(r"^\s*<!--\s*docs-test:(?P<body>.*?)-->\s*$")


def _parse_marker(body: str, where: str) -> tuple[bool, dict[str, str]]:
    own, env = False, {}
    for word in shlex.split(body):
        if word == "own-process":
            own = True
        elif word.startswith("env="):
            name, sep, value = word[4:].partition("=")
            if not sep or not name:
                raise ValueError(f"{where}: docs-test marker: env= needs NAME=VALUE, got {word!r}")
            env[name] = value
        else:
            raise ValueError(f"{where}: unknown docs-test marker word {word!r} (known: own-process, env=NAME=VALUE)")
    if env and not own:
        raise ValueError(f"{where}: docs-test env= needs own-process (the shared process cannot change its env)")
    return own, env


def parse(path: Path) -> tuple[list[Block], list[str]]:
    """The page's blocks to run (setup first), and the problems that fail the page."""
    rel = path.relative_to(ROOT).as_posix()
    lines = path.read_text(encoding="utf-8").splitlines()
    blocks: list[Block] = []
    problems: list[str] = []
    i, fence_no, pending = 0, {}, None
    while i < len(lines):
        line = lines[i]
        if line.strip().startswith("<!-- docs-setup"):
            start = i
            body = []
            i += 1
            while i < len(lines) and "-->" not in lines[i]:
                body.append(lines[i])
                i += 1
            blocks.insert(sum(b.lang == "setup" for b in blocks), Block("setup", start + 1, "\n".join(body) + "\n"))
            i += 1
            continue
        m = MARKER.match(line)
        if m:
            try:
                pending = (i + 1, *_parse_marker(m.group("body"), f"{rel}:{i + 1}"))
            except ValueError as e:
                problems.append(str(e))
            i += 1
            continue
        m = FENCE.match(line)
        if not m:
            if line.strip():
                pending = None if pending and not line.strip().startswith("<!--") else pending
            i += 1
            continue
        fence, info, start = m.group("fence"), m.group("info").strip(), i
        body = []
        i += 1
        while i < len(lines) and not re.match(rf"^ {{0,3}}{fence[0]}{{{len(fence)},}}\s*$", lines[i]):
            body.append(lines[i][len(m.group("indent")) :] if lines[i].startswith(m.group("indent")) else lines[i])
            i += 1
        i += 1  # the closing fence
        source = "\n".join(body) + "\n"
        words = info.split()
        lang = words[0].lower() if words else ""
        where = f"{rel}:{start + 1}"
        if lang.startswith("{"):
            if lang in CODE_DIRECTIVES and (len(words) < 2 or words[1].lower() not in SHOWN):
                problems.append(
                    f"{where}: a {lang} directive ({info!r}) would show code that is never run; use a plain ```python/```bash fence"
                )
            pending = None
            continue
        if lang in ("python", "bash"):
            n = fence_no.get(lang, 0)
            fence_no[lang] = n + 1
            if lang == "bash" and (rel, n) in EXCLUDED:
                pending = None
                continue
            own, env = (pending[1], pending[2]) if pending else (False, {})
            if own and lang != "python":
                problems.append(f"{where}: the own-process marker applies to python blocks only")
            blocks.append(Block(lang, start + 1, source, own, env))
        elif lang in SHOWN:
            for k, text in enumerate(body):
                if PROMPT.match(text):
                    problems.append(
                        f"{where}: line {start + 2 + k} of a ```{lang} block has a prompt ({text.strip()[:60]!r}): "
                        "a command to run goes in a ```bash or ```python block (see tests/test_docs_examples.py)"
                    )
        else:
            problems.append(
                f"{where}: fence language {info or '(none)'!r} is neither executed ({', '.join(EXECUTED)}) nor "
                f"output-only ({', '.join(SHOWN)}); rename it so the example runs or is plainly output"
            )
        pending = None
    return blocks, problems


# The driver runs in a fresh interpreter in the page's directory: it execs each python block in one
# namespace, runs bash and own-process blocks as children, and stops at the first failure, writing
# which block failed to the result file.
DRIVER = r"""
import json, os, subprocess, sys, traceback
spec = json.load(open(sys.argv[1]))
result_path = sys.argv[2]
ns = {"__name__": "__main__"}
for k, b in enumerate(spec["blocks"]):
    print(f"\n=== docs-test: block {k} ({b['lang']}, line {b['line']}) ===", flush=True)
    try:
        if b["lang"] == "bash":
            rc = subprocess.run(["bash", "-euo", "pipefail", "-c", b["source"]]).returncode
            if rc:
                raise SystemExit(f"bash exited with status {rc}")
        elif b["own_process"]:
            env = {**os.environ, **b["env"]}
            rc = subprocess.run([sys.executable, "-c", b["source"]], env=env).returncode
            if rc:
                raise SystemExit(f"the own-process python block exited with status {rc}")
        else:
            exec(compile(b["source"], f"{spec['page']}:{b['line']}", "exec"), ns)
        sys.stdout.flush(); sys.stderr.flush()
    except BaseException as e:
        sys.stdout.flush(); sys.stderr.flush()
        json.dump({"failed": k, "error": "".join(traceback.format_exception(e))}, open(result_path, "w"))
        sys.exit(1)
json.dump({"failed": None}, open(result_path, "w"))
"""


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PATH"] = str(Path(sys.executable).parent) + os.pathsep + env.get("PATH", "")
    env["MPLBACKEND"] = "Agg"
    # A page sets its own device count where it needs one; never inherit the test process's.
    for name in ("JAX_NUM_CPU_DEVICES", "XLA_FLAGS", "JAX_ENABLE_X64"):
        env.pop(name, None)
    return env


def run_page(path: Path, workdir: Path) -> tuple[int, list[Block]]:
    """Run the page's blocks in ``workdir``; fail the test with a useful message. Returns the block count."""
    rel = path.relative_to(ROOT).as_posix()
    blocks, problems = parse(path)
    if problems:
        pytest.fail(f"{rel}: code blocks that would not be run:\n  " + "\n  ".join(problems), pytrace=False)
    if not blocks:
        return 0, blocks
    spec = workdir / ".docs-test-spec.json"
    result = workdir / ".docs-test-result.json"
    driver = workdir / ".docs-test-driver.py"
    spec.write_text(json.dumps({"page": rel, "blocks": [b.__dict__ for b in blocks]}))
    driver.write_text(DRIVER)
    try:
        proc = subprocess.run(
            [sys.executable, str(driver), str(spec), str(result)],
            cwd=workdir,
            env=_env(),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            timeout=PAGE_TIMEOUT_S,
        )
        output = proc.stdout
    except subprocess.TimeoutExpired as e:
        out = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else e.stdout or ""
        pytest.fail(
            f"{rel}: the page's examples ran past {PAGE_TIMEOUT_S} s; output tail:\n{out[-3000:]}", pytrace=False
        )
    outcome = json.loads(result.read_text()) if result.exists() else {"failed": -1, "error": ""}
    if proc.returncode or outcome["failed"] is not None:
        k = outcome["failed"]
        if k is None or k < 0:
            pytest.fail(
                f"{rel}: the driver died (exit {proc.returncode}); output tail:\n{output[-4000:]}", pytrace=False
            )
        b = blocks[k]
        # the output of the failing block only: from its header on
        tail = output[output.rfind(f"=== docs-test: block {k} ") :]
        pytest.fail(
            f"{rel}, the ```{b.lang} block at line {b.line} failed"
            + (" (own process, env " + " ".join(f"{n}={v}" for n, v in b.env.items()) + ")" if b.own_process else "")
            + f":\n{textwrap.indent(b.source.rstrip(), '    | ')}\n--- error ---\n{outcome['error'][-3000:]}"
            + f"--- output tail ---\n{tail[-3000:]}",
            pytrace=False,
        )
    return len(blocks), blocks


@pytest.mark.slow
@pytest.mark.parametrize("path", pages(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_page_examples_run(path, tmp_path):
    run_page(path, tmp_path)


# --- the harness's own rules, checked on small synthetic pages (cheap: no jaxlayers) ----------------


def _page(tmp_path, text: str) -> Path:
    docs = tmp_path / "docs"
    docs.mkdir(exist_ok=True)
    p = docs / "page.md"
    p.write_text(textwrap.dedent(text))
    return p


@pytest.fixture
def fake_root(tmp_path, monkeypatch):
    monkeypatch.setattr(sys.modules[__name__], "ROOT", tmp_path)
    return tmp_path


@pytest.mark.parametrize("lang", ["", "sh", "shell", "py", "python3", "pycon", "zsh", "ipython", "shell-session"])
def test_unrun_fence_languages_are_rejected(fake_root, lang):
    _, problems = parse(_page(fake_root, f"# t\n\n```{lang}\nprint(1)\n```\n"))
    assert len(problems) == 1 and "neither executed" in problems[0] and "page.md:3" in problems[0]


@pytest.mark.parametrize("prompt", ["$ jaxlayers train", ">>> import jaxlayers", "% ls", "In [1]: x = 1"])
def test_prompts_in_shown_blocks_are_rejected(fake_root, prompt):
    _, problems = parse(_page(fake_root, f"```console\n{prompt}\n```\n"))
    assert len(problems) == 1 and "prompt" in problems[0]


def test_code_directive_with_a_language_is_rejected(fake_root):
    _, problems = parse(_page(fake_root, "```{code-block} python\nprint(1)\n```\n\n```{note}\nfine\n```\n"))
    assert len(problems) == 1 and "{code-block}" in problems[0]


def test_blocks_share_a_namespace_interleave_with_bash_and_report_the_failing_block(fake_root):
    page = _page(
        fake_root,
        """\
        <!-- docs-setup
        base = 40
        -->
        ```python
        x = base + 1
        ```

        ```bash
        echo made > made.txt
        ```

        <!-- docs-test: own-process env=DOCS_TEST_VAR=7 -->
        ```python
        import os; assert os.environ["DOCS_TEST_VAR"] == "7" and "x" not in globals()
        ```

        ```python
        assert x == 41 and open("made.txt").read() == "made\\n"
        raise RuntimeError("boom at the end")
        ```
        """,
    )
    work = fake_root / "work"
    work.mkdir()
    with pytest.raises(pytest.fail.Exception) as info:
        run_page(page, work)
    message = str(info.value)
    assert "docs/page.md, the ```python block at line 17 failed" in message
    assert "RuntimeError: boom at the end" in message and "    | raise RuntimeError" in message


def test_bash_failure_stops_the_page(fake_root):
    page = _page(fake_root, "```bash\nfalse | cat\n```\n\n```python\nopen('never', 'w')\n```\n")
    work = fake_root / "work"
    work.mkdir()
    with pytest.raises(pytest.fail.Exception, match="bash block at line 1 failed"):
        run_page(page, work)
    assert not (work / "never").exists()


def test_readme_setup_block_is_the_one_excluded():
    text = (ROOT / "README.md").read_text().splitlines()
    assert text[0] == "# jaxlayers" and text[2] == "```bash", "README.md must open with its set-up commands"
    assert text[3].startswith("python3 -m venv .venv") and "pytest" in text[4]
