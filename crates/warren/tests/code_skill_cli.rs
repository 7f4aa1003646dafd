//! `warren code` and `warren skill` through the real binary on the dir backend: what each
//! command prints and its exit code, a refused sync (conflicts listed, exit 1) then --force, the
//! sync's byte limit, stop; a skill built from examples/skills, a tool call's JSON and exit code,
//! a refused tool, cleanup.
//! Uids 3_950_000 + 1000 per test belong to this file.

mod common;

use std::path::{Path, PathBuf};

use common::{show, Warren};

const UID_BASE: u32 = 3_950_000;

fn warren(slot: u32) -> Warren {
    Warren::new(UID_BASE + slot * 1000, "").on("dir")
}

fn stdout(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn code_session_end_to_end() {
    let w = warren(0);
    let proj = w.dir.join("proj");
    std::fs::create_dir(&proj).expect("mkdir");
    std::fs::write(proj.join("a.txt"), "one\n").expect("write");
    std::fs::write(proj.join("keep.txt"), "keep\n").expect("write");
    let p = proj.to_str().expect("utf-8");

    let started = w.ok(&["code", "start", "--path", p]);
    let first = started.lines().next().unwrap_or_default();
    let id = first.strip_prefix("started code session ").and_then(|r| r.split(' ').next()).expect("id").to_owned();
    assert_eq!(
        first,
        format!("started code session {id} (backend dir, workspace code.{id}): copied 2 files, 0 symlinks (9 bytes) from {p}")
    );
    let list = w.json(&["code", "list"]);
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
    assert_eq!(list[0]["id"], id.as_str());

    // exec: the command's output and exit code.
    let out = w.run(&[
        "code",
        "exec",
        &id,
        "--",
        "sh",
        "-c",
        "echo two >> a.txt; echo new > b.txt; rm keep.txt; echo done; exit 3",
    ]);
    assert_eq!(out.status.code(), Some(3), "{}", show(&out));
    assert_eq!(stdout(&out), "done\n");

    assert_eq!(
        w.ok(&["code", "changes", &id]),
        " M a.txt    | +1 -0\n A b.txt    | +1 -0\n D keep.txt | +0 -1\n\
         3 files changed: 1 added, 1 modified, 1 deleted; +2 -1 lines\n"
    );
    let changes = w.json(&["code", "changes", &id]);
    assert_eq!((changes["added"].as_u64(), changes["deleted"].as_u64()), (Some(1), Some(1)), "{changes}");
    let diff = w.ok(&["code", "diff", &id]);
    for needle in [
        "diff --git a/a.txt b/a.txt",
        " one\n+two\n",
        "new file mode 100644",
        "+new\n",
        "deleted file mode 100644",
        "-keep\n",
    ] {
        assert!(diff.contains(needle), "{needle:?} missing from:\n{diff}");
    }
    let only = w.ok(&["code", "diff", &id, "b.txt"]);
    assert!(only.contains("b/b.txt") && !only.contains("a.txt"), "{only}");
    let log = w.ok(&["code", "log", &id]);
    let lines: Vec<&str> = log.lines().collect();
    assert_eq!(lines.len(), 2, "{log}");
    assert!(lines[0].contains("  exec: sh -c 'echo two >> a.txt;") && lines[0].ends_with("  [exit 3]"), "{log}");
    assert!(lines[1].ends_with(&format!("  base: copy of {p}")), "{log}");
    let head = lines[0].split(' ').next().expect("commit").to_owned();
    assert_eq!(head.len(), 12, "{log}");

    // The host edits a.txt meanwhile: the sync is refused with the conflict listed, exit 1.
    std::fs::write(proj.join("a.txt"), "host\n").expect("host edit");
    let out = w.run(&["code", "sync", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stdout(&out), "");
    let err = stderr(&out);
    assert!(err.starts_with("error: sync refused: 1 host file(s) changed"), "{err}");
    assert!(err.contains("\n  a.txt: changed on the host since the last sync\n") && err.contains("--force"), "{err}");
    assert_eq!(std::fs::read_to_string(proj.join("a.txt")).expect("read"), "host\n", "refused: untouched");
    assert!(!proj.join("b.txt").exists() && proj.join("keep.txt").exists(), "refused: nothing written");
    assert_eq!(
        w.ok(&["code", "sync", &id, "--dry-run"]),
        "  would be written: a.txt\n  would be written: b.txt\n  would be deleted: keep.txt\n  \
         conflict: a.txt: changed on the host since the last sync\ndry run: nothing was changed\n"
    );
    assert_eq!(
        w.ok(&["code", "sync", &id, "--force"]),
        format!(
            "  written: a.txt\n  written: b.txt\n  deleted: keep.txt\n  overwritten (--force): a.txt: changed on the \
             host since the last sync\nsynced {head}: 2 written, 1 deleted\n"
        )
    );
    assert_eq!(std::fs::read_to_string(proj.join("a.txt")).expect("read"), "one\ntwo\n");
    assert_eq!(std::fs::read_to_string(proj.join("b.txt")).expect("read"), "new\n");
    assert!(!proj.join("keep.txt").exists());
    assert_eq!(w.ok(&["code", "sync", &id]), "nothing to sync: the host has every recorded change\n");

    // A sync over its byte limit is refused before writing; stop refuses unsynced changes.
    let out = w.run(&["code", "exec", &id, "--", "sh", "-c", "head -c 3000 /dev/zero | tr '\\0' x > big"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let out = w.run(&["code", "sync", &id, "--max-bytes", "2K"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(
        stderr(&out).contains("it would write 3000 bytes of file content, more than the 2048 bytes"),
        "{}",
        show(&out)
    );
    assert!(!proj.join("big").exists());
    let out = w.run(&["code", "stop", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains(&format!("session {id} has changes never synced")), "{}", show(&out));
    let synced = w.ok(&["code", "sync", &id]);
    assert!(synced.starts_with("  written: big\nsynced "), "{synced}");
    assert_eq!(std::fs::metadata(proj.join("big")).expect("stat").len(), 3000);

    assert_eq!(w.ok(&["code", "stop", &id]), format!("stopped code session {id}\n"));
    let out = w.run(&["code", "status", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("not found"), "{}", show(&out));
    assert_eq!(w.json(&["code", "list"]), serde_json::json!([]));
}

fn example(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/skills").join(name)
}

#[test]
fn skill_sandbox_end_to_end() {
    let w = warren(1);
    let skill = example("disk-report.md");
    let out = w.run(&["skill", "build", skill.to_str().expect("utf-8")]);
    assert!(out.status.success(), "{}", show(&out));
    let text = stdout(&out);
    let id = text.trim_end().to_owned();
    assert_eq!(text, format!("{id}\n"), "build prints the id alone on stdout");
    let hex = id.strip_prefix("skill.").expect("skill. prefix");
    assert!(hex.len() == 12 && hex.bytes().all(|b| b.is_ascii_hexdigit()), "{id}");
    assert!(stderr(&out).starts_with(&format!("built sandbox {id} from skill disk-report (shell")), "{}", show(&out));

    let wrote = w.ok(&["skill", "tool", &id, "write_file", "--path", "data/in.txt", "--content", "hello"]);
    assert_eq!(wrote, "wrote 5 bytes to data/in.txt\n");
    // A tool call's JSON result and its exit code.
    let out = w.run(&["--json", "skill", "tool", &id, "run_command", "--", "bin/report.sh", "data"]);
    assert_eq!(out.status.code(), Some(0), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (r["ok"].as_bool(), r["tool"].as_str(), r["exit_code"].as_i64()),
        (Some(true), Some("run_command"), Some(0)),
        "{r}"
    );
    let report = r["stdout"].as_str().expect("stdout");
    assert!(report.starts_with("files: 1\nbytes: "), "{report}");
    let out = w.run(&["--json", "skill", "tool", &id, "run_command", "--", "sh", "-c", "echo oops >&2; exit 7"]);
    assert_eq!(out.status.code(), Some(7), "{}", show(&out));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert_eq!(
        (r["ok"].as_bool(), r["exit_code"].as_i64(), r["stderr"].as_str()),
        (Some(false), Some(7), Some("oops\n")),
        "{r}"
    );
    // Without --json: the command's output on stdout, its exit code.
    let out = w.run(&["skill", "tool", &id, "run_command", "--", "sh", "-c", "cat data/in.txt; exit 4"]);
    assert_eq!((out.status.code(), stdout(&out).as_str()), (Some(4), "hello"), "{}", show(&out));

    // A tool the skill does not list is refused: exit 1, the allowed tools named, nothing run.
    let out = w.run(&["skill", "tool", &id, "run_python", "--code", "open('ran', 'w')"]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert_eq!(stdout(&out), "");
    assert!(
        stderr(&out).contains(&format!("tool run_python is not allowed in sandbox {id}: its skill allows run_command, list_files, read_file, write_file")),
        "{}",
        show(&out)
    );
    let listing = w.ok(&["skill", "tool", &id, "list_files"]);
    assert!(!listing.contains("ran"), "{listing}");

    // The sandbox is a workspace like any other: in `warren stats`, with its skill's limits.
    let v = w.json(&["stats", &id]);
    assert_eq!(v[0]["user"], id.as_str(), "{v}");
    assert!(v[0]["stats"]["memory_limit_bytes"].as_u64().is_some(), "a skill sandbox has a memory limit: {v}");
    assert!(w.ok(&["stats"]).contains(&id), "the stats table lists the sandbox");

    assert_eq!(w.ok(&["skill", "cleanup", &id]), format!("removed sandbox {id} (workspace, record)\n"));
    assert!(!w.ok(&["stats"]).contains(&id), "a removed sandbox leaves the stats");
    let out = w.run(&["skill", "show", &id]);
    assert_eq!(out.status.code(), Some(1), "{}", show(&out));
    assert!(stderr(&out).contains("not found"), "{}", show(&out));
    let out = w.run(&["skill", "cleanup", &id]);
    assert_eq!(out.status.code(), Some(1), "cleanup of a removed sandbox: {}", show(&out));
    assert_eq!(w.json(&["skill", "list"]), serde_json::json!([]));
}
