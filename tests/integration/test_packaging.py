"""Packaging: `make install` (PREFIX, DESTDIR), the systemd unit, the Dockerfile and
docker-compose.yml. There is no Docker engine on our machines, so the image and the compose
file are checked for what can go wrong without running them: the files the image copies exist,
its packages match tests/deps.sh and the libraries the binary links, it runs as non-root, and
the compose services, dependencies, host names and ports agree with pgmux's configuration and
Prometheus's scrape target."""

import configparser
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]


def make(*args, **kw):
    return subprocess.run(["make", "--no-print-directory", *args], cwd=REPO, capture_output=True,
                          text=True, timeout=600, **kw)


def ini(path):
    p = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), comment_prefixes=(";", "#"))
    p.read_string(Path(path).read_text())
    return p


def duration_s(text):
    m = re.fullmatch(r"(\d+)\s*(ms|s|min|m|h)?", text.strip())
    assert m, text
    n, unit = int(m.group(1)), m.group(2) or "s"
    return n * {"ms": 0.001, "s": 1, "m": 60, "min": 60, "h": 3600}[unit]


def unit_items(path):
    """The unit's key=value lines as (section, key, value), comments left out."""
    items, section = [], None
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or line.startswith(";"):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        k, v = line.split("=", 1)
        items.append((section, k.strip(), v.strip()))
    return items


def pgmux_check(binary, config_text, workdir, userlist='"demo" "demo"\n'):
    """Run `pgmux --check` on config_text (auth_file pointed at a userlist in workdir)."""
    (workdir / "userlist.txt").write_text(userlist)
    text = re.sub(r"(?m)^auth_file\s*=.*$", f"auth_file = {workdir}/userlist.txt", config_text)
    (workdir / "check.ini").write_text(text)
    return subprocess.run([str(binary), "--check", "-c", str(workdir / "check.ini")],
                          capture_output=True, text=True, timeout=30)


# ---- make install ----------------------------------------------------------------------------

EXPECTED = {
    "bin/pgmux": 0o755,
    "share/doc/pgmux/pgmux.ini.example": 0o644,
    "share/doc/pgmux/userlist.txt.example": 0o644,
    "share/doc/pgmux/README.md": 0o644,
    "lib/systemd/system/pgmux.service": 0o644,
}


@pytest.mark.parametrize("prefix", [None, "/usr"])
def test_make_install_destdir(tmp_path, prefix):
    dest = tmp_path / "root"
    args = ["install", f"DESTDIR={dest}"] + ([f"PREFIX={prefix}"] if prefix else [])
    r = make(*args)
    assert r.returncode == 0, r.stdout + r.stderr
    root = dest / (prefix or "/usr/local").lstrip("/")
    installed = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if p.is_file())
    assert installed == sorted(str(root.relative_to(dest) / k) for k in EXPECTED), installed
    for rel, mode in EXPECTED.items():
        assert (root / rel).stat().st_mode & 0o777 == mode, rel
    out = subprocess.run([str(root / "bin/pgmux"), "--version"], capture_output=True, text=True)
    assert out.returncode == 0 and out.stdout.startswith("pgmux "), out
    # The unit names the installed binary.
    unit = (root / "lib/systemd/system/pgmux.service").read_text()
    bindir = f"{prefix or '/usr/local'}/bin/pgmux"
    assert f"ExecStart={bindir} -c /etc/pgmux/pgmux.ini" in unit
    if prefix:
        assert "/usr/local/" not in unit
    # The example configuration, with the example auth_file, is one pgmux accepts.
    r = pgmux_check(root / "bin/pgmux", (root / "share/doc/pgmux/pgmux.ini.example").read_text(),
                    tmp_path, (root / "share/doc/pgmux/userlist.txt.example").read_text())
    assert r.returncode == 0, r.stdout + r.stderr
    # uninstall takes it all back.
    r = make("uninstall", *args[1:])
    assert r.returncode == 0, r.stdout + r.stderr
    assert [p for p in dest.rglob("*") if p.is_file()] == []


def test_systemd_unit(tmp_path):
    unit_path = REPO / "packaging/pgmux.service"
    items = unit_items(unit_path)
    service = {k: v for s, k, v in items if s == "Service"}
    assert service["Type"] in ("simple", "exec")
    assert re.fullmatch(r"/bin/kill -HUP \$MAINPID", service["ExecReload"])
    assert service["KillSignal"] == "SIGTERM"
    assert int(service["LimitNOFILE"]) >= 65536
    assert service["NoNewPrivileges"] == "yes" and service["ProtectSystem"] == "strict"
    assert service["User"] and service["User"] != "root"
    # systemd must not SIGKILL a pgmux that lets transactions finish: TimeoutStopSec above the
    # example's shutdown_timeout (and the default, 30s) plus the second of lingering close.
    example = ini(REPO / "packaging/pgmux.ini")
    shutdown = duration_s(example["pgmux"].get("shutdown_timeout", "30s"))
    assert duration_s(service["TimeoutStopSec"]) > max(shutdown, 30) + 1
    assert ("Install", "WantedBy", "multi-user.target") in items

    # systemd-analyze verify needs the binary the unit names: install under a prefix that
    # exists (no DESTDIR) and verify that copy.
    if not shutil.which("systemd-analyze"):
        pytest.fail("systemd-analyze not installed (Debian package systemd, see tests/deps.sh)")
    prefix = tmp_path / "prefix"
    r = make("install", f"PREFIX={prefix}")
    assert r.returncode == 0, r.stdout + r.stderr
    installed = prefix / "lib/systemd/system/pgmux.service"
    r = subprocess.run(["systemd-analyze", "verify", str(installed)], capture_output=True,
                       text=True, timeout=60)
    # verify exits 0 on unknown keys too; any line about our unit is a finding.
    findings = [l for l in (r.stdout + r.stderr).splitlines() if "pgmux" in l]
    assert r.returncode == 0 and findings == [], r.stdout + r.stderr


# ---- Dockerfile ------------------------------------------------------------------------------


def dockerfile_stages():
    """[(base image, text of the stage)] in order."""
    stages = []
    for line in (REPO / "Dockerfile").read_text().splitlines():
        m = re.match(r"FROM\s+(\S+)", line)
        if m:
            stages.append([m.group(1), ""])
        elif stages:
            stages[-1][1] += line + "\n"
    return stages


def apt_packages(stage_text):
    joined = stage_text.replace("\\\n", " ")
    pkgs = set()
    for m in re.finditer(r"apt-get install ([^&\n]*)", joined):
        pkgs |= {w for w in m.group(1).split() if not w.startswith("-")}
    return pkgs


def deps_packages():
    text = (REPO / "tests/deps.sh").read_text()
    block = re.search(r"(?ms)^pkgs=\((.*?)^\)", text).group(1)
    return {w for line in block.splitlines() for w in line.split("#")[0].split()}


def linked_packages(binary):
    """Debian packages providing the libraries binary links directly (libc6 left out)."""
    needed = re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]",
                        subprocess.run(["readelf", "-d", binary], capture_output=True,
                                       text=True).stdout)
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True).stdout
    paths = dict(re.findall(r"^\s*(\S+) => (\S+)", ldd, re.M))
    pkgs = set()
    for lib in needed:
        path = paths[lib]
        for candidate in (path, os.path.realpath(path), "/usr" + path):
            r = subprocess.run(["dpkg", "-S", candidate], capture_output=True, text=True)
            if r.returncode == 0:
                pkgs.add(r.stdout.split(":")[0])
                break
        else:
            raise AssertionError(f"no Debian package provides {lib} ({path})")
    return pkgs - {"libc6"}


def test_dockerfile(release_binary):
    stages = dockerfile_stages()
    assert len(stages) == 2, stages
    (build_image, build), (run_image, run) = stages
    for image in (build_image, run_image):
        assert re.fullmatch(r"debian:(12|bookworm)(-slim)?", image), image
    # The build stage installs what tests/deps.sh installs for building pgmux.
    build_deps = {p for p in deps_packages()
                  if p in ("build-essential", "pkg-config") or
                  (p.endswith("-dev") and p not in ("libcmocka-dev", "libclang-rt-14-dev"))}
    assert build_deps <= apt_packages(build), build_deps - apt_packages(build)
    assert "make install PREFIX=/usr/local DESTDIR=/install" in build
    # The runtime stage has every library the binary links.
    need = linked_packages(release_binary)
    assert need <= apt_packages(run), need - apt_packages(run)
    # Non-root, and the entry point is the installed binary with the configuration copied in.
    users = re.findall(r"(?m)^USER\s+(\S+)", run)
    assert users and users[-1] not in ("root", "0"), users
    assert re.search(r'(?m)^ENTRYPOINT \["/usr/local/bin/pgmux"\]', run)
    assert re.search(r'(?m)^CMD \["-c", "/etc/pgmux/pgmux.ini"\]', run)
    for m in re.finditer(r"(?m)^COPY (?!--from)(.+) (\S+)$", run):
        for src in m.group(1).split():
            assert (REPO / src).exists(), src
    exposed = {int(p) for line in re.findall(r"(?m)^EXPOSE (.+)$", run) for p in line.split()}
    cfg = ini(REPO / "packaging/docker/pgmux.ini")["pgmux"]
    assert {int(cfg["listen_port"]), int(cfg["metrics_port"])} <= exposed


# ---- docker-compose.yml ----------------------------------------------------------------------


def compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def mounts(service):
    """{container path: host path (absolute)} of a service's bind mounts."""
    out = {}
    for v in service.get("volumes", []):
        parts = v.split(":")
        if parts[0].startswith("./"):
            out[parts[1]] = REPO / parts[0]
    return out


def depends(service):
    d = service.get("depends_on", [])
    return set(d) if isinstance(d, list) else set(d)


def test_compose_services_and_dependencies():
    c = compose()
    s = c["services"]
    assert set(s) == {"primary", "replica", "pgmux", "prometheus"}
    for name in ("primary", "replica"):
        assert re.fullmatch(r"postgres:15(\.\d+)?(-bookworm)?", s[name]["image"]), s[name]
    assert s["pgmux"]["build"] in (".", {"context": "."})
    assert s["prometheus"]["image"].startswith("prom/prometheus")
    assert depends(s["replica"]) == {"primary"}
    assert depends(s["pgmux"]) >= {"primary", "replica"}
    assert depends(s["prometheus"]) >= {"pgmux"}
    # Every file the compose file mounts exists.
    for name, svc in s.items():
        for container_path, host in mounts(svc).items():
            assert host.exists(), (name, host)
    # pgmux waits for healthy databases, and is given more than shutdown_timeout to stop.
    assert s["pgmux"]["depends_on"]["primary"]["condition"] == "service_healthy"
    assert "healthcheck" in s["primary"] and "healthcheck" in s["replica"]
    cfg = ini(REPO / "packaging/docker/pgmux.ini")["pgmux"]
    assert duration_s(s["pgmux"]["stop_grace_period"]) > duration_s(cfg["shutdown_timeout"]) + 1


def test_compose_replica_streams_from_primary():
    s = compose()["services"]
    rep = s["replica"]
    env = rep["environment"]
    assert env["PRIMARY_HOST"] == "primary"
    script_path = mounts(rep)[rep["entrypoint"][0]]
    script = script_path.read_text()
    assert os.access(script_path, os.X_OK)
    assert re.search(r"pg_basebackup -h \"\$PRIMARY_HOST\" -p 5432\s*\\\s*-U replicator", script)
    assert "-R" in script and "hot_standby=on" in script
    # The primary accepts that replication login: its init script makes the role and the
    # pg_hba line, and the primary runs with WAL for a replica.
    init = [h for c, h in mounts(s["primary"]).items() if c.startswith("/docker-entrypoint-initdb.d/")]
    assert len(init) == 1 and os.access(init[0], os.X_OK)
    text = init[0].read_text()
    assert "CREATE ROLE replicator LOGIN REPLICATION" in text
    assert "host replication replicator" in text
    assert env["REPLICATION_PASSWORD"] == s["primary"]["environment"]["REPLICATION_PASSWORD"]
    assert "wal_level=replica" in s["primary"]["command"]
    # And the demo role pgmux's userlist names.
    assert "CREATE ROLE demo LOGIN PASSWORD 'demo'" in text and "CREATE DATABASE demo" in text


def test_compose_pgmux_config_points_at_the_services(release_binary, tmp_path):
    s = compose()["services"]
    m = mounts(s["pgmux"])
    cfg_path = m["/etc/pgmux/pgmux.ini"]
    cfg = ini(cfg_path)
    nodes = {sec.split(".", 1)[1]: cfg[sec] for sec in cfg.sections() if sec.startswith("node.")}
    assert {n["host"] for n in nodes.values()} == {"primary", "replica"}
    assert all(int(n["port"]) == 5432 for n in nodes.values())
    assert cfg["pgmux"]["auth_file"] in m  # the userlist is mounted where the config says
    assert cfg["pgmux"]["listen_addr"] == "*" and cfg["pgmux"]["metrics_addr"] == "*"
    published = {int(p.split(":")[-1]) for p in s["pgmux"]["ports"]}
    assert {int(cfg["pgmux"]["listen_port"]), int(cfg["pgmux"]["metrics_port"])} <= published
    # The same demo as `make run`: user demo / demo, database demo.
    assert '"demo" "demo"' in m[cfg["pgmux"]["auth_file"]].read_text()
    assert cfg["pool"]["warm_pools"] == "demo@demo"
    # pgmux itself accepts the file (service names swapped for an address that resolves here).
    text = cfg_path.read_text().replace("host = primary", "host = 127.0.0.1")
    text = text.replace("host = replica", "host = 127.0.0.1")
    r = pgmux_check(release_binary, text, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr


def test_compose_prometheus_scrapes_pgmux():
    s = compose()["services"]
    m = mounts(s["prometheus"])
    prom_path = m["/etc/prometheus/prometheus.yml"]
    assert "--config.file=/etc/prometheus/prometheus.yml" in s["prometheus"]["command"]
    prom = yaml.safe_load(prom_path.read_text())
    jobs = {j["job_name"]: j for j in prom["scrape_configs"]}
    job = jobs["pgmux"]
    assert job.get("metrics_path", "/metrics") == "/metrics"
    targets = [t for sc in job["static_configs"] for t in sc["targets"]]
    cfg = ini(mounts(s["pgmux"])["/etc/pgmux/pgmux.ini"])["pgmux"]
    assert targets == [f"pgmux:{cfg['metrics_port']}"]
