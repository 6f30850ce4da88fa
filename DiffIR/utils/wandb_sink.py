"""wandb as one more log sink: ``logger:wandb:project`` turns it on (the optional extra ``pip install -e .[wandb]``).

A tracker must never cost a run. wandb's online start waits for its server (about 45 s, up to its
``init_timeout``) and then fails, so before ``wandb.init`` the server is probed (a TCP connection, name resolution
included, 2 s at most); an unreachable one means offline mode, with a notice saying how to upload later
(``wandb sync DIR``). A start that still fails online is retried offline, and one that fails offline leaves the run
without wandb, with a warning. The run id is saved in ``experiments/NAME/wandb_id.txt``, so ``--auto_resume``
continues the same wandb run (``logger:wandb:resume_id`` names one explicitly).
"""
from __future__ import annotations

import contextlib
import os
import os.path as osp
import random
import secrets
import socket
import string
import threading
import urllib.parse
import urllib.request
from typing import Any, Dict, Iterator, Mapping, Optional, Tuple

import numpy as np

from DiffIR.config.loading import WandbOptions
from DiffIR.config.sections import RunOptions
from DiffIR.utils.errors import OptionError
from DiffIR.utils.misc import atomic_write_bytes

__all__ = ["WandbSink", "wandb_for_run", "open_wandb_sink", "server_reachable", "ID_FILE", "INSTALL_HINT"]

INSTALL_HINT = "pip install -e .[wandb]"
ID_FILE = "wandb_id.txt"  # in the experiment folder: the run that --auto_resume continues
PROBE_TIMEOUT = 2.0  # seconds the server probe may take, DNS included
DEFAULT_SERVER = "https://api.wandb.ai"  # when this wandb's own settings cannot be read
_LOCAL_MODES = ("offline", "dryrun", "disabled")  # modes that never contact the server


def wandb_for_run(options: RunOptions) -> Optional[Any]:
    """The wandb module when this run logs to wandb (a ``project``, not a debug run, as in BasicSR), else None.

    Called before the experiment folder is touched, on every rank, so a missing package stops every rank alike with
    one :class:`OptionError` naming the extra.
    """
    wanted = WandbOptions.build(options.logger.wandb or {}, "logger:wandb:")
    if not wanted.project or "debug" in options.name:
        return None
    try:
        import wandb
    except ImportError as e:
        raise OptionError(f"'logger:wandb:project' is {wanted.project!r}, but wandb cannot be imported ({e}). Fix: "
                          f"{INSTALL_HINT} (or set logger:wandb:project: ~ to train without wandb).") from None
    return wandb


class WandbSink:
    """A started wandb run as a :class:`~DiffIR.utils.log_sinks.LogSink`."""

    def __init__(self, run: Any, wandb: Any, first_step: int = 0) -> None:
        self.run, self.wandb = run, wandb
        # a resumed online run already holds the steps up to its last log; wandb would refuse each older one with a
        # warning (iterations redone since the last saved state)
        self.first_step = first_step

    def scalars(self, values: Mapping[str, float], step: int) -> None:
        if step >= self.first_step:
            self.run.log(dict(values), step=step)

    def image(self, tag: str, image: np.ndarray, step: int) -> None:
        if step >= self.first_step:
            self.run.log({tag: self.wandb.Image(image)}, step=step)

    def close(self) -> None:
        self.run.finish()


def _probe_address(server: str) -> Tuple[str, int]:
    """Host and port that a request to ``server`` connects to first: the proxy's where the environment sets one."""
    url = urllib.parse.urlsplit(server)
    host, port = url.hostname or "", url.port or (443 if url.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(url.scheme)
    if proxy and host and not urllib.request.proxy_bypass(host):
        p = urllib.parse.urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        return p.hostname or host, p.port or 80
    return host, port


def server_reachable(server: str, timeout: float = PROBE_TIMEOUT) -> bool:
    """Whether a TCP connection to ``server`` (an URL) opens within ``timeout`` seconds, name resolution included.

    The connection runs in a daemon thread because ``getaddrinfo`` has no timeout of its own (a dead resolver can
    take 5 s per try); a probe still running after ``timeout`` counts as unreachable and is left to end by itself.
    """
    host, port = _probe_address(server)
    if not host:
        return False
    answer = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            answer.append(True)
        except (OSError, UnicodeError):
            answer.append(False)

    probe = threading.Thread(target=connect, name="wandb-probe", daemon=True)
    probe.start()
    probe.join(timeout)
    return bool(answer and answer[0])


def _wandb_settings() -> Tuple[str, str]:
    """``(mode, server)`` as ``wandb.init`` will read them: wandb's settings files and environment (``WANDB_MODE``,
    ``WANDB_BASE_URL``, ``wandb offline``, ``wandb login --host``). Where this wandb's settings object is not where
    this version expects it, the environment alone."""
    try:
        from wandb.sdk.wandb_setup import singleton  # loads the settings; starts no service

        settings = singleton().settings
        return str(settings.mode), str(settings.base_url)
    except Exception:  # another wandb version's internals
        return os.environ.get("WANDB_MODE", "online"), os.environ.get("WANDB_BASE_URL", DEFAULT_SERVER)


def _start_mode() -> Tuple[Optional[str], str]:
    """The mode to pass to ``wandb.init`` (None: wandb's own) and, for offline, why."""
    mode, server = _wandb_settings()
    if mode in _LOCAL_MODES:
        return None, f"WANDB_MODE / wandb's settings say {mode}"
    if server_reachable(server):
        return None, ""
    return "offline", f"the wandb server {server} could not be reached within {PROBE_TIMEOUT:g} s"


def _run_id(wanted: WandbOptions, experiment_root: str, resumed: bool) -> str:
    """``resume_id``; else, for a resumed training run, the id saved in the experiment folder; else a new one
    (from ``secrets``: the seeded ``random`` stream of the run is not touched)."""
    if wanted.resume_id:
        return str(wanted.resume_id)
    path = osp.join(experiment_root, ID_FILE)
    if resumed and osp.isfile(path):
        with open(path, encoding="utf-8") as f:
            saved = f.read().strip()
        if saved:
            return saved
    return "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(8))


@contextlib.contextmanager
def _rng_untouched() -> Iterator[None]:
    """Python's and NumPy's global random states as they were: starting a tracker must not change what a seeded
    (or resumed) run draws."""
    py, np_state = random.getstate(), np.random.get_state()
    try:
        yield
    finally:
        random.setstate(py)
        np.random.set_state(np_state)


def _init(wandb: Any, kwargs: Dict[str, Any], mode: Optional[str], logger: Any) -> Tuple[Optional[Any], str]:
    """``wandb.init``; an online start that fails is retried offline. Returns the run (None when wandb could not
    start at all) and, for a fallback, why."""
    try:
        with _rng_untouched():
            return wandb.init(mode=mode, **kwargs), ""
    except Exception as e:  # wandb raises many kinds (UsageError, CommError, timeouts); none may stop training
        if mode == "offline":
            logger.warning(f"wandb could not start ({type(e).__name__}: {e}); training continues without wandb.")
            return None, ""
        run, _ = _init(wandb, kwargs, "offline", logger)
        return run, f"wandb's online start failed ({type(e).__name__}: {e})"


def open_wandb_sink(wandb: Any, options: RunOptions, config: Mapping[str, Any], resumed: bool,
                    logger: Any) -> Optional[WandbSink]:
    """Start (or, ``resumed``, continue) the run's wandb run on rank 0 and save its id; ``config``: the options the
    user wrote. None when wandb could not start."""
    wanted = WandbOptions.build(options.logger.wandb or {}, "logger:wandb:")
    root = options.context.paths.experiments_root
    mode, why = _start_mode()
    kwargs = dict(project=wanted.project, entity=wanted.entity, name=options.name, config=dict(config),
                  id=_run_id(wanted, root, resumed), resume="allow", allow_val_change=True,
                  dir=os.environ.get("WANDB_DIR") or root)
    run, failed = _init(wandb, kwargs, mode, logger)
    if run is None:
        return None
    why = failed or why
    if getattr(run, "offline", False):
        sync_dir = getattr(run, "sync_dir", None) or osp.dirname(run.dir)
        say = logger.warning if mode == "offline" or failed else logger.info
        say(f"wandb runs offline ({why}); the run is saved in {sync_dir}. Upload it when online with: "
            f"wandb sync {sync_dir}")
    atomic_write_bytes(osp.join(root, ID_FILE), f"{run.id}\n".encode())
    first_step = int(getattr(run, "step", 0) or 0) if resumed else 0
    logger.info(f"wandb: project {wanted.project}, run {run.id}" + (" (continued)" if resumed else ""))
    return WandbSink(run, wandb, first_step)
