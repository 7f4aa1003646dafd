#!/usr/bin/env python3
"""Writes the checked-in seed corpora under fuzz/corpus/<target>/ (run from anywhere).

Inputs named regress-* (the ones that found bugs, copied in by hand) are kept.

The seeds are small, well-formed (and a few hostile) examples of each target's input, so a
short run starts from real structure instead of from nothing. Re-running rewrites the same
files; CI never runs this (the files are checked in). Needs python3 and GNU tar.
"""
import base64
import hashlib
import hmac
import io
import json
import os
import subprocess
import tarfile
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
CORPUS = os.path.join(HERE, "corpus")


def put(target, name, data):
    d = os.path.join(CORPUS, target)
    os.makedirs(d, exist_ok=True)
    if isinstance(data, str):
        data = data.encode()
    with open(os.path.join(d, name), "wb") as f:
        f.write(data)


def trim_tar(data):
    """Drops the record padding: content, then the two-block end marker only."""
    end = len(data.rstrip(b"\0"))
    end = (end + 511) // 512 * 512
    return data[:end] + b"\0" * 1024


def pytar(entries, fmt=tarfile.GNU_FORMAT):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=fmt) as t:
        for e in entries:
            info = tarfile.TarInfo(e["name"])
            info.type = e.get("type", tarfile.REGTYPE)
            info.mode = e.get("mode", 0o644)
            info.mtime = 1700000000
            info.linkname = e.get("link", "")
            data = e.get("data", b"")
            info.size = len(data) if info.type in (tarfile.REGTYPE,) else 0
            t.addfile(info, io.BytesIO(data) if info.size else None)
    return trim_tar(buf.getvalue())


def archives():
    # Benign trees made by GNU tar (the format `tar -C ws -cf - .` makes), 512-byte records.
    with tempfile.TemporaryDirectory() as tmp:
        src = os.path.join(tmp, "ws")
        os.makedirs(os.path.join(src, "dir/sub"))
        with open(os.path.join(src, "hello.txt"), "w") as f:
            f.write("hello, warren\n")
        with open(os.path.join(src, "dir/sub/notes.md"), "w") as f:
            f.write("# notes\n")
        os.symlink("../hello.txt", os.path.join(src, "dir/link"))
        long = "n" * 120
        with open(os.path.join(src, "dir", long), "w") as f:
            f.write("long name\n")
        with open(os.path.join(src, "sparse"), "wb") as f:
            f.seek(64 << 10)
            f.write(b"end of a sparse file\n")
        for fmt, name in (("gnu", "gnu"), ("posix", "pax")):
            extra = ["--pax-option=delete=atime,delete=ctime"] if fmt == "posix" else []
            out = subprocess.run(
                ["tar", "-C", src, "-b1", "--sort=name", "--owner=0", "--group=0", "--mtime=@1700000000",
                 f"--format={fmt}", *extra, "-cf", "-", "--exclude=./sparse", "."],
                check=True, capture_output=True).stdout
            put("archive", f"tree-{name}", b"\0" + trim_tar(out))
        out = subprocess.run(["tar", "-C", src, "-b1", "--sparse", "--format=gnu", "--owner=0", "--group=0",
                              "--mtime=@1700000000", "-cf", "-", "sparse"],
                             check=True, capture_output=True).stdout
        put("archive", "sparse-gnu", b"\0" + trim_tar(out))
        # The compressed form as given (odd first byte): what a snapshot file holds.
        out = subprocess.run(["tar", "-C", src, "-b1", "--format=gnu", "--owner=0", "--group=0", "--mtime=@1700000000",
                              "--sort=name", "-cf", "-", "hello.txt", "dir"],
                             check=True, capture_output=True).stdout
        z = subprocess.run(["zstd", "-q", "-c", "-3", "--check"], input=trim_tar(out), check=True,
                           capture_output=True).stdout
        put("archive", "tree-zst", b"\1" + z)
    put("archive", "empty", b"\0" + b"\0" * 1024)
    # Hostile ones (each must be refused, or, for the symlink games, never write outside).
    R, D, S, L = tarfile.REGTYPE, tarfile.DIRTYPE, tarfile.SYMTYPE, tarfile.LNKTYPE
    hostile = {
        "dotdot": [{"name": "ok.txt", "data": b"fine"}, {"name": "../outside/canary", "data": b"pwned"}],
        "absolute": [{"name": "/tmp/warren-fuzz-absolute", "data": b"pwned"}],
        "symlink-then-through": [{"name": "link", "type": S, "link": "../outside"},
                                 {"name": "link/canary", "data": b"pwned"}],
        "symlink-absolute-dir": [{"name": "abs", "type": S, "link": "/tmp"}, {"name": "abs/x", "type": D}],
        "symlink-then-replace": [{"name": "c", "type": S, "link": "../outside/canary"},
                                 {"name": "c", "data": b"pwned"}],
        "hardlink": [{"name": "h", "type": L, "link": "../outside/canary"}],
        "fifo-and-device": [{"name": "fifo", "type": tarfile.FIFOTYPE}, {"name": "tty", "type": tarfile.CHRTYPE}],
        "setuid": [{"name": "suid", "data": b"#!/bin/sh\n", "mode": 0o4755}],
        "duplicate": [{"name": "d", "type": D}, {"name": "d/f", "data": b"1"}, {"name": "d", "type": D}],
        "file-as-parent": [{"name": "f", "data": b"x"}, {"name": "f/g", "data": b"y"}],
    }
    for name, entries in hostile.items():
        put("archive", name, b"\0" + pytar(entries))
    put("archive", "pax-path-dotdot", b"\0" + pytar([{"name": "p" * 150 + "/../../x", "data": b"z"}],
                                                      tarfile.PAX_FORMAT))


def ids():
    for i, s in enumerate(["u_123", "U_123\nu_123", "user_2NfXabc\nsnap_001", "ws_01JDQ8ABCDEFGHJKMNPQRSTVWX",
                           "0f8fad5b-d9cb-469f-a165-70867728950e", "code.abc\nskill.x", "a..b\n.u", "a" * 64]):
        put("ids", f"seed-{i}", s)


def paths():
    seeds = [b"\0a/b/c", b"\0out/OUTSIDE_ONLY", b"\0d/up/outside/OUTSIDE_ONLY", b"\0absout", b"\0magic/etc",
             b"\0self/self/f", b"\0dd/g\nd/e", b"\1abs/tmp/x", b"\1out/new", b"\2dd/e/new/dir", b"\3out",
             b"\3d/up", b"\0../x", b"\0/etc/passwd", b"\0a/./b//c/\nd/../e", b"\0" + b"x" * 256]
    for i, s in enumerate(seeds):
        put("workspace_path", f"seed-{i}", s)


def terminal():
    msgs = ['{"type":"auth","token":"a.b.c"}', '{"type":"attach"}',
            '{"type":"attach","session":"t_0123456789abcdef0123456789abcdef","cols":120,"rows":40}',
            '{"type":"resize","cols":100,"rows":30}', '{"type":"ping","id":7}', '{"type":"ack","bytes":65536}',
            '{"type":"resize","cols":0,"rows":24,"extra":1}', '{"type":"launch_missiles"}']
    for i, m in enumerate(msgs):
        put("terminal_control", f"seed-{i}", m)
    outs = [
        b"\x4e\x17" + b"\x1b[1;31mred\x1b[0m plain \xc3\xa9 \xe6\x97\xa5\xe6\x9c\xac\r\nuser@ws:~$ ",
        b"\x4e\x17" + b"line\r\n" * 40 + b"\x1b[?1049h\x1b[2J\x1b[Hfull screen\x1b[?1h\x1b=\x1b[?2004h",
        b"\x10\x05" + b"w" * 100 + b"\x00\xff\x40\x10" + b"after resize\x1b[5;10r\x1b[3S\x1b[?25l",
        b"\x4e\x17" + b"\x1b]0;title\x07\x1b[38;5;196mx\x1b[48;2;1;2;3my\x1b[4:3mz\x1b[?1000h\x1b[?1006h",
    ]
    for i, o in enumerate(outs):
        put("terminal_output", f"seed-{i}", o)


def config():
    full = """state_dir = "/var/lib/warren"
backend = "ns"
network = false
uid_base = 2000000
uid_count = 100000

[limits]
memory_bytes = 536870912
cpu_millis = 1000
pids = 256
disk_bytes = 2147483648
nofile = 1024

[snapshots]
keep = 5
storage = "s3"
idle_suspend_after = "30m"
daily_at = "03:00"

[snapshots.s3]
bucket = "warren"
prefix = "prod"
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
allow_http = true

[server]
listen = "127.0.0.1:7878"
max_json_bytes = 1048576
request_timeout_secs = 120
terminal_idle_secs = 3600
rate_limit_rps = 50
use_containers = false
container_image = "python:3.12-slim"

[auth]
issuer = "https://issuer.example"
audience = "warren"
algorithms = ["RS256", "ES256"]
leeway_secs = 30
"""
    put("config", "full", full)
    put("config", "minimal", 'backend = "dir"\n[snapshots]\nidle_suspend_after = 600\n')
    put("config", "env", "WARREN_LISTEN=:7878\nWARREN_TERMINAL_IDLE_SECS=60\nUSE_CONTAINERS=yes\n"
                         "CONTAINER_IMAGE=registry.example.com/team/image:tag\nWARREN_JWT_ALGORITHMS=RS256, ES256\n"
                         "1.5h\n03:00\n[::1]:7000\n")


def b64(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=")


def auth():
    secret = b"warren-fuzz-secret-of-at-least-32-bytes!"
    header = b'{"alg":"HS256","typ":"JWT"}'
    claims = json.dumps({"sub": "u_1", "exp": 4102444800, "nbf": 1700000000, "iss": "warren-fuzz",
                         "aud": "warren", "scope": "openid warren:admin"}, separators=(",", ":")).encode()
    put("auth", "signed-admin", b"\1" + header + b"\0" + claims)
    put("auth", "signed-user", b"\1" + header + b"\0" + b'{"sub":"user_2NfX","exp":4102444800,'
                                                           b'"iss":"warren-fuzz","aud":["warren","x"]}')
    put("auth", "alg-none", b"\1" + b'{"alg":"none"}' + b"\0" + claims)
    msg = b64(header) + b"." + b64(claims)
    sig = b64(hmac.new(secret, msg, hashlib.sha256).digest())
    put("auth", "bearer-valid", b"\0Bearer " + msg + b"." + sig)
    put("auth", "bearer-garbage", b"\0Bearer a.b.c")


def main():
    # Start clean, but keep the inputs that found bugs (regress-*: added by hand, never generated).
    for t in ("archive", "ids", "workspace_path", "terminal_control", "terminal_output", "config", "auth"):
        d = os.path.join(CORPUS, t)
        for name in os.listdir(d) if os.path.isdir(d) else []:
            if not name.startswith("regress-"):
                os.remove(os.path.join(d, name))
    archives()
    ids()
    paths()
    terminal()
    config()
    auth()


if __name__ == "__main__":
    main()
