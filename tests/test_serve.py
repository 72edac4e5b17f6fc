"""The workbench's server as a user starts it, from a folder other than the project's: it listens on 127.0.0.1 only
and sends no usage statistics, unless the user asks for another address."""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path

import pytest
from conftest import streamlit_server

pytest.importorskip("streamlit")
from streamlit import config  # noqa: E402

APP = Path(__file__).resolve().parent.parent / "app"
if str(APP) not in sys.path:
    sys.path.insert(0, str(APP))  # the app's common module, as the app itself imports it
PROC_NET = (Path("/proc/net/tcp"), Path("/proc/net/tcp6"))


def listening_addresses(port: int) -> set[str]:
    """The local addresses of the TCP sockets listening on ``port`` (Linux: /proc/net/tcp and tcp6)."""
    found = set()
    for table in PROC_NET:
        if not table.exists():
            continue
        for line in table.read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            hex_ip, hex_port = local.split(":")
            if state != "0A" or int(hex_port, 16) != port:  # 0A: LISTEN
                continue
            raw = bytes.fromhex(hex_ip)  # 32-bit words in host (little-endian) order
            raw = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
            found.add(socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw))
    return found


def clean_env(home: Path) -> dict[str, str]:
    """This environment without STREAMLIT_* settings, with an empty home (no ~/.streamlit/config.toml)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    return {**env, "HOME": str(home), "HICO_CACHE": str(home / "cache"), "HICO_RUNS": str(home / "runs")}


def serve(cwd: Path, *flags: str) -> tuple[set[str], str]:
    """Start ``streamlit run app/main.py`` in ``cwd`` as a user would, wait until it answers on 127.0.0.1, and
    return (the addresses it listens on, what it printed)."""
    with streamlit_server(cwd, clean_env(cwd), *flags) as server:
        addresses = listening_addresses(server.port)
    return addresses, server.output


@pytest.mark.skipif(not PROC_NET[0].exists(), reason="reads the listening sockets from /proc/net (Linux)")
def test_started_from_another_folder_it_serves_this_machine_only(tmp_path):
    addresses, out = serve(tmp_path)
    assert addresses == {"127.0.0.1"}, out
    assert "Network URL" not in out and "Collecting usage statistics" not in out
    assert "URL: http://127.0.0.1:" in out


@pytest.mark.skipif(not PROC_NET[0].exists(), reason="reads the listening sockets from /proc/net (Linux)")
def test_another_address_when_asked_for(tmp_path):
    addresses, _ = serve(tmp_path, "--server.address", "0.0.0.0")
    assert addresses == {"0.0.0.0"}


@pytest.fixture
def streamlit_config(monkeypatch, tmp_path):
    """Reparse Streamlit's configuration as ``streamlit run`` would, from ``tmp_path`` with an empty home; put the
    test process's configuration back afterwards."""
    for key in [k for k in os.environ if k.startswith("STREAMLIT_")]:
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)

    def parse(main_script: Path | None, flags: dict | None = None) -> None:
        """``flags``: what ``streamlit run`` passes on from its --options and STREAMLIT_* variables."""
        monkeypatch.setattr(config, "_main_script_path", None if main_script is None else str(main_script))
        config.get_config_options(force_reparse=True, options_from_flags=flags)

    yield parse
    monkeypatch.undo()
    config.get_config_options(force_reparse=True)


def test_config_beside_the_script_binds_localhost_without_statistics(streamlit_config):
    from common import exposure_problem

    streamlit_config(APP / "main.py")  # what `cd /tmp && streamlit run /path/to/app/main.py` reads
    assert config.get_option("server.address") == "127.0.0.1"
    assert config.get_option("browser.gatherUsageStats") is False
    assert exposure_problem() is None
    streamlit_config(APP / "main.py", {"server.address": "0.0.0.0"})  # asked for explicitly
    assert config.get_option("server.address") == "0.0.0.0" and exposure_problem() is None


def test_a_streamlit_that_ignores_the_apps_config_shows_nothing(streamlit_config):
    from common import exposure_problem

    streamlit_config(None)  # an older Streamlit: no config beside the script, only ~ and the working folder
    assert "every network interface" in exposure_problem()
    streamlit_config(None, {"server.address": "0.0.0.0"})
    assert "usage statistics" in exposure_problem()
    streamlit_config(None, {"server.address": "0.0.0.0", "browser.gatherUsageStats": False})
    assert exposure_problem() is None
