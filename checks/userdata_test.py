#!/usr/bin/env python3
"""The user-data of both machines, rendered by Terraform itself and read as the machines read it.

terraform/userdata is a module without providers, so Terraform renders it offline (its own
templatefile and jsonencode). With tokens and passwords holding `: `, `#`, both quotes, a
backtick, `<>&` and non-ASCII letters, this checks that:

- each cloud-config parses with PyYAML's safe_load (cloud-init's parser) and has exactly the
  expected write_files, each file root-only and holding exactly its value;
- each environment file, read with POSIX shell double-quote rules (systemd's EnvironmentFile
  takes the same escapes inside double quotes), yields exactly the values;
- the discovery agent's file holds no token and no Prometheus password, the autoscaler's no API
  key;
- Prometheus' web config passes `promtool check web-config`, and a real Prometheus started with
  it answers 401 without the password, 401 with a wrong one, and 200 with the right one; with
  prometheus_auth = false (no hash) it answers without one.

Usage: checks/userdata_test.py [terraform/]   Needs: terraform, python3-yaml, prometheus, promtool
"""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import base64

import yaml

TF_DIR = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "terraform"))
MODULE = os.path.join(TF_DIR, "userdata")

if shutil.which("terraform") is None:
    print("userdata: SKIPPED: terraform is not installed, so the user-data cannot be rendered "
          "by Terraform here (the other checks still ran)")
    sys.exit(0)

failures = []


def check(cond, msg):
    if not cond:
        failures.append(msg)


HARD = "a: b #c \"dq\" 'sq' `bt` <&> ünï"
VALUES = {
    "zone": "ch-gva-2",
    "pool_id": "9a6a2f25-8b5a-4f2b-9d3e-2d2f0b6c1e01",
    "api_key": "EXO0123456789abcdef",
    "api_secret": "secret: #" + HARD,
    "webhook_token": "#" + HARD,
    "drain_token": "drain: " + HARD,
    "pool_min": 2,
    "pool_max": 7,
    "drain_wait_seconds": 25,
    "grafana_admin_password": "'" + HARD,
    "grafana_secret_key": "\"" + HARD,
    "prometheus_password": "prom " + HARD.replace("`", ""),
}


def render(auth):
    """Renders the module with Terraform; returns {output name: text}."""
    root = tempfile.mkdtemp(prefix="userdata-tf-")
    try:
        hash_expr = "bcrypt(var.v.prometheus_password, 6)" if auth else "null"
        with open(os.path.join(root, "main.tf"), "w") as f:
            f.write(f'''
variable "v" {{ type = any }}
module "u" {{
  source = {json.dumps(MODULE)}
  zone = var.v.zone
  pool_id = var.v.pool_id
  api_key = var.v.api_key
  api_secret = var.v.api_secret
  webhook_token = var.v.webhook_token
  drain_token = var.v.drain_token
  pool_min = var.v.pool_min
  pool_max = var.v.pool_max
  drain_wait_seconds = var.v.drain_wait_seconds
  grafana_admin_password = var.v.grafana_admin_password
  grafana_secret_key = var.v.grafana_secret_key
  prometheus_password = var.v.prometheus_password
  prometheus_password_hash = {hash_expr}
}}
output "monitor" {{
  value     = module.u.monitor
  sensitive = true
}}
output "pool" {{
  value     = module.u.pool
  sensitive = true
}}
''')
        with open(os.path.join(root, "v.auto.tfvars.json"), "w") as f:
            json.dump({"v": VALUES}, f, ensure_ascii=False)
        env = dict(os.environ, TF_IN_AUTOMATION="1", TF_CLI_CONFIG_FILE="/dev/null")
        for cmd in (["init", "-input=false", "-no-color"], ["apply", "-auto-approve", "-input=false", "-no-color"]):
            r = subprocess.run(["terraform", f"-chdir={root}", *cmd], capture_output=True, text=True, env=env)
            if r.returncode != 0:
                sys.exit(f"userdata: terraform {cmd[0]} failed:\n{r.stdout}{r.stderr}")
        r = subprocess.run(["terraform", f"-chdir={root}", "output", "-json"], capture_output=True, text=True,
                           env=env, check=True)
        return {k: v["value"] for k, v in json.loads(r.stdout).items()}
    finally:
        shutil.rmtree(root, ignore_errors=True)


def files_of(cloud_config, which):
    check(cloud_config.startswith("#cloud-config\n"), f"{which}: must start with #cloud-config")
    doc = yaml.safe_load(cloud_config)
    check(isinstance(doc, dict) and set(doc) == {"write_files"}, f"{which}: only write_files expected, got {doc!r:.200}")
    out = {}
    for f in doc["write_files"]:
        check(f.get("owner") == "root:root" and f.get("permissions") == "0600", f"{which}: {f['path']} must be root-only 0600")
        check(isinstance(f.get("content"), str), f"{which}: {f['path']}: content must be a string, got {f.get('content')!r}")
        out[f["path"]] = f["content"]
    return out


def read_env(text):
    """Reads an environment file as `set -a; . file` does in a POSIX shell."""
    with tempfile.NamedTemporaryFile("w", suffix=".env", delete=False) as f:
        f.write(text)
    try:
        r = subprocess.run(["env", "-i", "sh", "-c", 'set -a; . "$1"; env -0', "sh", f.name],
                           capture_output=True, check=True)
    finally:
        os.unlink(f.name)
    pairs = [p.split(b"=", 1) for p in r.stdout.split(b"\0") if p]
    return {k.decode(): v.decode() for k, v in pairs if k not in (b"PWD", b"SHLVL", b"_", b"OLDPWD")}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def status(url, auth=None):
    req = urllib.request.Request(url)
    if auth:
        req.add_header("Authorization", "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode())
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def prometheus_answers(web_config, attempts):
    """Starts a real Prometheus with this web config; returns the status of each attempt."""
    d = tempfile.mkdtemp(prefix="userdata-prom-")
    try:
        web = os.path.join(d, "web.yml")
        with open(web, "w") as f:
            f.write(web_config)
        r = subprocess.run(["promtool", "check", "web-config", web], capture_output=True, text=True)
        check(r.returncode == 0, f"promtool check web-config: {r.stdout}{r.stderr}")
        cfg = os.path.join(d, "prometheus.yml")
        with open(cfg, "w") as f:
            f.write("global:\n  scrape_interval: 15s\n")
        port = free_port()
        p = subprocess.Popen(["prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={d}/data",
                              f"--web.listen-address=127.0.0.1:{port}", f"--web.config.file={web}"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        try:
            url = f"http://127.0.0.1:{port}/api/v1/query?query=1"
            deadline = time.monotonic() + 60
            while True:
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    if p.poll() is not None or time.monotonic() > deadline:
                        sys.exit(f"userdata: Prometheus did not start: {p.stderr.read().decode()[-2000:]}")
                    time.sleep(0.2)
            return [status(url, a) for a in attempts]
        finally:
            p.terminate()
            p.wait(timeout=30)
    finally:
        shutil.rmtree(d, ignore_errors=True)


# --- with Prometheus' authentication (the default) ---
out = render(auth=True)
mon = files_of(out["monitor"], "monitor")
pool = files_of(out["pool"], "pool")

check(set(pool) == {"/etc/poolpilot/env"}, f"pool: files {sorted(pool)}")
check(read_env(pool["/etc/poolpilot/env"]) == {"POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"]},
      f"pool: env file yields {read_env(pool['/etc/poolpilot/env'])!r}")

expected_files = {"/etc/poolpilot/env", "/etc/poolpilot/autoscaler.env", "/etc/poolpilot/webhook-token",
                  "/etc/poolpilot/grafana-secret-key", "/etc/poolpilot/grafana-admin-password",
                  "/etc/poolpilot/prometheus-password", "/etc/poolpilot/prometheus-web.yml"}
check(set(mon) == expected_files, f"monitor: files {sorted(mon)}")
api = read_env(mon["/etc/poolpilot/env"])
check(api == {"EXOSCALE_ZONE": VALUES["zone"], "EXOSCALE_INSTANCEPOOL_ID": VALUES["pool_id"],
              "EXOSCALE_API_KEY": VALUES["api_key"], "EXOSCALE_API_SECRET": VALUES["api_secret"]},
      f"monitor: the discovery agent's env file yields {api!r}")
auto = read_env(mon["/etc/poolpilot/autoscaler.env"])
check(auto == {"POOLPILOT_WEBHOOK_TOKEN": VALUES["webhook_token"], "POOLPILOT_DRAIN_TOKEN": VALUES["drain_token"],
               "POOLPILOT_MIN": "2", "POOLPILOT_MAX": "7", "POOLPILOT_DRAIN_WAIT": "25s",
               "POOLPILOT_PROMETHEUS_PASSWORD": VALUES["prometheus_password"]},
      f"monitor: the autoscaler's env file yields {auto!r}")
for path, key in [("/etc/poolpilot/webhook-token", "webhook_token"), ("/etc/poolpilot/grafana-secret-key", "grafana_secret_key"),
                  ("/etc/poolpilot/grafana-admin-password", "grafana_admin_password"),
                  ("/etc/poolpilot/prometheus-password", "prometheus_password")]:
    check(mon[path] == VALUES[key], f"monitor: {path} holds {mon[path]!r}, not {VALUES[key]!r}")

web = mon["/etc/poolpilot/prometheus-web.yml"]
check(VALUES["prometheus_password"] not in web, "the web config must hold the hash, not the password")
pw = VALUES["prometheus_password"]
got = prometheus_answers(web, [None, ("prometheus", pw + "x"), ("prometheus", pw)])
check(got == [401, 401, 200], f"Prometheus with the web config: without / wrong / right password answered {got}, expected [401, 401, 200]")

# --- prometheus_auth = false: the course checker's case ---
mon_open = files_of(render(auth=False)["monitor"], "monitor (no auth)")
got = prometheus_answers(mon_open["/etc/poolpilot/prometheus-web.yml"], [None])
check(got == [200], f"Prometheus without authentication answered {got}")

if failures:
    for f in failures:
        print(f"userdata: FAIL: {f}")
    sys.exit(1)
print("userdata: ok: both cloud-configs rendered by Terraform, parsed by PyYAML and the shell, "
      "Prometheus' web config enforced by Prometheus")
