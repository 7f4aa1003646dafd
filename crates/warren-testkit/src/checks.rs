//! The checks. Each is an `async fn(&Harness<B>)` that sets up its own [`Env`], asserts real
//! behaviour of the backend, and tears down what it made.

use std::os::unix::fs::MetadataExt;
use std::time::Duration;

use warren_core::fs::FileKind;
use warren_core::{
    Backend, BackendKind, Error, ExecControl, ExecEvent, ExecRequest, IsolationLevel, State, TtySize, WorkspacePath,
};

use crate::{collect, describe, guard, host_processes, next_event, text, wpath, Env, Harness, Retry, OP_GUARD};

fn is_invalid_path<T: std::fmt::Debug>(r: &warren_core::Result<T>) -> bool {
    matches!(r, Err(Error::InvalidPath { .. }))
}

/// A shell line leaving `sleep {arg}` running in its own session after the exec ends.
fn background(arg: &str) -> String {
    format!(
        "if command -v setsid >/dev/null; then setsid sleep {arg} </dev/null >/dev/null 2>&1 & \
         else (sleep {arg} </dev/null >/dev/null 2>&1 &); fi; true"
    )
}

fn code_of<T>(r: &warren_core::Result<T>) -> &'static str {
    match r {
        Ok(_) => "ok",
        Err(e) => e.code(),
    }
}

/// Capabilities name the harness's kind, fit the isolation level, stay the same across a restart,
/// and the claimed isolation is real (only loopback without network; host processes invisible).
pub async fn capabilities<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "capabilities", 0) else { return };
    let caps = env.caps();
    assert_ne!(caps.kind, BackendKind::Auto, "a backend's kind is never auto: {caps:?}");
    assert_eq!(caps.kind, h.kind(), "capabilities name another kind than the harness: {caps:?}");
    let expected = match caps.kind {
        BackendKind::Dir => Some(IsolationLevel::UidOnly),
        BackendKind::Ns => Some(IsolationLevel::Namespaces),
        BackendKind::Docker | BackendKind::Pool => Some(IsolationLevel::Container),
        BackendKind::Auto => None,
    };
    if let Some(level) = expected {
        assert_eq!(caps.isolation, level, "isolation level does not fit the kind: {caps:?}");
    }
    if caps.isolation == IsolationLevel::UidOnly {
        assert!(!caps.process_isolation, "uid-only isolation cannot hide other processes: {caps:?}");
    }
    assert_eq!(env.caps(), caps, "capabilities changed between two calls");
    env.reopen();
    assert_eq!(env.caps(), caps, "capabilities changed after reopening the backend");

    let s = env.running("capy").await;
    if caps.network_isolation {
        assert!(!s.network);
        let dev = env.sh_ok(&s, "cat /proc/net/dev").await;
        let ifaces: Vec<&str> = dev.lines().skip(2).filter_map(|l| l.split(':').next()).map(str::trim).collect();
        assert!(
            ifaces.iter().all(|i| *i == "lo"),
            "network_isolation is claimed but a workspace without network sees interfaces {ifaces:?}"
        );
    } else {
        println!("capabilities: no network_isolation, not checking interfaces");
    }
    if caps.process_isolation {
        let me = std::process::id();
        let procs = env.processes(&s).await;
        let exe = std::env::current_exe().expect("the test binary's path");
        let exe = exe.to_string_lossy();
        assert!(
            !procs.iter().any(|p| p.contains(exe.as_ref())),
            "process_isolation is claimed but the workspace sees the test process {me} ({exe}): {procs:?}"
        );
        assert!(!procs.is_empty(), "the workspace sees no process at all, not even its own shell");
    } else {
        println!("capabilities: no process_isolation, not checking the process view");
    }
    env.finish().await;
}

/// Absent -> create -> Stopped -> start -> Running -> start (no-op) -> stop -> Stopped -> stop
/// -> destroy -> Absent -> destroy; the home is 0700 and owned by the uid; stop kills every process.
pub async fn lifecycle<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "lifecycle", 1) else { return };
    let s = env.spec("alice");

    let st = env.status(&s).await;
    assert_eq!(st.state, State::Absent, "status before create: {st:?}");
    env.create(&s).await;
    let st = env.status(&s).await;
    assert_eq!(st.state, State::Stopped, "status after create: {st:?}");
    if let Some(hf) = env.backend().host_files(&s) {
        assert_eq!((hf.uid, hf.gid), (s.uid, s.gid), "host_files owner is not the workspace's uid:gid");
        let md = std::fs::metadata(&hf.dir).unwrap_or_else(|e| panic!("home {} after create: {e}", hf.dir.display()));
        assert!(md.is_dir(), "home {} is not a directory", hf.dir.display());
        assert_eq!(md.mode() & 0o7777, 0o700, "home {} mode is {:o}, want 0700", hf.dir.display(), md.mode() & 0o7777);
        assert_eq!((md.uid(), md.gid()), (s.uid, s.gid), "home {} owner", hf.dir.display());
    } else {
        println!("lifecycle: no host_files, not checking the home directory on the host");
    }

    let first = env.start(&s).await;
    let st = env.status(&s).await;
    assert_eq!(st.state, State::Running, "status after start: {st:?}");
    assert_eq!(env.sh_ok(&s, "echo up").await, "up\n");
    // A background process that outlives its exec: stop must kill it too.
    let marker = format!("1000.{}", s.uid);
    env.sh_ok(&s, &background(&marker)).await;
    let visible = env.processes(&s).await.iter().any(|p| p.contains(&marker));
    let again = env.start(&s).await;
    if let (Some(a), Some(b)) = (first.pid, again.pid) {
        assert_eq!(a, b, "start of a running workspace restarted it (init pid changed)");
    }
    assert_eq!(env.status(&s).await.state, State::Running, "status after the second start");
    if visible {
        let procs = env.processes(&s).await;
        assert!(
            procs.iter().any(|p| p.contains(&marker)),
            "the second start disturbed the running workspace: background sleep {marker} is gone: {procs:?}"
        );
    } else {
        println!("lifecycle: the backend ends background processes with their exec; not checking them across start");
    }

    env.stop(&s).await;
    let st = env.status(&s).await;
    assert_eq!(st.state, State::Stopped, "status after stop: {st:?}");
    let mut retry = Retry::new(format!("after stop, every host process of uid {} is gone", s.uid));
    loop {
        let left = host_processes(s.uid);
        if left.is_empty() {
            break;
        }
        retry.wait(format!("{left:?}")).await;
    }
    env.stop(&s).await;
    assert_eq!(env.status(&s).await.state, State::Stopped, "status after the second stop");

    let r = guard("destroy", OP_GUARD, env.backend().destroy(&s)).await;
    assert!(r.is_ok(), "destroy: {r:?}");
    assert_eq!(env.status(&s).await.state, State::Absent, "status after destroy");
    if let Some(hf) = env.backend().host_files(&s) {
        assert!(!hf.dir.exists(), "home {} still exists after destroy", hf.dir.display());
    }
    let r = guard("destroy", OP_GUARD, env.backend().destroy(&s)).await;
    assert!(r.is_ok(), "destroy of an absent workspace must succeed: {r:?}");

    // Destroy of a running workspace stops it first.
    let s2 = env.running("bob").await;
    env.sh_ok(&s2, &format!("{}; echo x > f", background(&format!("1000.{}", s2.uid)))).await;
    let r = guard("destroy", OP_GUARD, env.backend().destroy(&s2)).await;
    assert!(r.is_ok(), "destroy of a running workspace: {r:?}");
    assert_eq!(env.status(&s2).await.state, State::Absent, "status after destroying a running workspace");
    let mut retry = Retry::new(format!("after destroy, every host process of uid {} is gone", s2.uid));
    loop {
        let left = host_processes(s2.uid);
        if left.is_empty() {
            break;
        }
        retry.wait(format!("{left:?}")).await;
    }
    if let Some(hf) = env.backend().host_files(&s2) {
        assert!(!hf.dir.exists(), "home {} still exists after destroying a running workspace", hf.dir.display());
    }
    env.finish().await;
}

/// stdout, stderr and exit codes, stdin, environment, cwd, argv passed unmangled, a missing
/// program, no terminal unless asked for.
pub async fn exec_basics<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_basics", 2) else { return };
    let s = env.running("alice").await;

    let out = env.exec(&s, ExecRequest::new(["echo", "hi"])).await;
    assert_eq!((out.exit_code, out.signal, out.timed_out), (0, None, false), "echo hi: {}", describe(&out));
    assert_eq!(out.stdout, b"hi\n", "echo hi: {}", describe(&out));
    assert!(out.stderr.is_empty(), "echo hi: {}", describe(&out));
    assert!(!out.truncated);

    let out = env.sh(&s, "echo e >&2; exit 3").await;
    assert_eq!(out.exit_code, 3, "exit 3: {}", describe(&out));
    assert_eq!(out.signal, None, "exit 3: {}", describe(&out));
    assert_eq!(out.stderr, b"e\n", "stderr: {}", describe(&out));
    assert!(out.stdout.is_empty(), "stdout: {}", describe(&out));

    let input: Vec<u8> = b"line one\nline two\n\x00\xff\xfe no newline at the end".to_vec();
    let out = env.exec(&s, ExecRequest { stdin: Some(input.clone()), ..ExecRequest::new(["cat"]) }).await;
    assert_eq!(out.exit_code, 0, "cat: {}", describe(&out));
    assert_eq!(out.stdout, input, "stdin fed to cat came back different: {}", describe(&out));
    // No stdin given: stdin is empty (EOF), the command does not hang.
    let out = env.exec(&s, ExecRequest::new(["cat"])).await;
    assert_eq!((out.exit_code, out.stdout.len()), (0, 0), "cat without stdin: {}", describe(&out));

    let req = ExecRequest {
        env: vec![("FOO".into(), "bar baz 'q' \"d\" $HOME".into()), ("PATH2".into(), String::new())],
        ..ExecRequest::new(["sh", "-c", "printf '%s|%s|' \"$FOO\" \"${PATH2-unset}\""])
    };
    let out = env.exec(&s, req).await;
    assert_eq!(text(&out.stdout), "bar baz 'q' \"d\" $HOME||", "env: {}", describe(&out));

    let r = guard("make_dir", OP_GUARD, env.backend().make_dir(&s, &wpath("sub/dir"))).await;
    assert!(r.is_ok(), "make_dir sub/dir: {r:?}");
    let out = env
        .exec(&s, ExecRequest { cwd: Some("sub/dir".into()), ..ExecRequest::new(["sh", "-c", "pwd; echo \"$HOME\""]) })
        .await;
    let o = text(&out.stdout);
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(out.exit_code, 0, "pwd: {}", describe(&out));
    assert_eq!(lines.len(), 2, "pwd: {}", describe(&out));
    assert!(lines[0].ends_with("/sub/dir"), "cwd sub/dir gave pwd {:?}", lines[0]);
    assert_eq!(lines[0], format!("{}/sub/dir", lines[1].trim_end_matches('/')), "cwd is not relative to HOME");

    let args = ["a b", "it's", "say \"hi\"", "$HOME", "*", "", "back\\slash", "tab\there", "-n", "ünï"];
    let mut argv = vec!["printf".to_owned(), "<%s>\\n".to_owned()];
    argv.extend(args.iter().map(|a| (*a).to_owned()));
    let out = env.exec(&s, ExecRequest::new(argv)).await;
    let want: String = args.iter().map(|a| format!("<{a}>\n")).collect();
    assert_eq!(text(&out.stdout), want, "argv was mangled: {}", describe(&out));

    let missing = "warren-no-such-program-xyz";
    match env.try_exec(&s, ExecRequest::new([missing, "arg"])).await {
        Ok(out) => assert_eq!(out.exit_code, 127, "a missing program must exit 127: {}", describe(&out)),
        Err(e) => {
            let msg = e.to_string();
            assert!(msg.contains(missing), "the error for a missing program must name it: {msg} ({e:?})");
        }
    }

    let out = env.exec(&s, ExecRequest::new(["tty"])).await;
    assert_ne!(out.exit_code, 0, "without tty the command must not have a terminal: {}", describe(&out));

    let r = env.try_exec(&s, ExecRequest::new(Vec::<String>::new())).await;
    assert!(matches!(r, Err(Error::InvalidRequest(_))), "an empty argv must be InvalidRequest: {r:?}");
    env.finish().await;
}

/// `id -u`, `id -g`, USER and `id -un` (the account name resolves) are the spec's; HOME is the
/// default cwd and writable.
pub async fn exec_identity<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_identity", 3) else { return };
    let s = env.running("alice").await;

    let out = env.exec(&s, ExecRequest::new(["id", "-u"])).await;
    assert_eq!(text(&out.stdout).trim(), s.uid.to_string(), "id -u: {}", describe(&out));
    let out = env.exec(&s, ExecRequest::new(["id", "-g"])).await;
    assert_eq!(text(&out.stdout).trim(), s.gid.to_string(), "id -g: {}", describe(&out));
    let out = env.sh(&s, "printf '%s' \"$USER\"").await;
    assert_eq!(text(&out.stdout), s.username, "USER: {}", describe(&out));

    let o = env.sh_ok(&s, "printf '%s\\n' \"$HOME\"; pwd; touch \"$HOME/.probe\" && echo writable").await;
    let lines: Vec<&str> = o.lines().collect();
    assert_eq!(lines.len(), 3, "HOME probe: {o:?}");
    assert!(lines[0].starts_with('/'), "HOME is not absolute: {:?}", lines[0]);
    assert_eq!(lines[0], lines[1], "the default cwd is not HOME");
    assert_eq!(lines[2], "writable");
    let r = guard("read_file", OP_GUARD, env.backend().read_file(&s, &wpath(".probe"))).await;
    assert!(r.is_ok(), "a file touched in $HOME is not in the workspace's files: {r:?}");
    // Last, so a missing account name does not hide the checks above.
    let out = env.exec(&s, ExecRequest::new(["id", "-un"])).await;
    assert_eq!(out.exit_code, 0, "id -un: {}", describe(&out));
    assert_eq!(text(&out.stdout).trim(), s.username, "id -un: {}", describe(&out));
    env.finish().await;
}

/// `kill -9 $$` gives code 137 and signal 9; a timeout kills a long command and returns.
pub async fn exec_signals_and_timeout<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_signals_and_timeout", 4) else { return };
    let s = env.running("alice").await;

    let out = env.sh(&s, "kill -9 $$").await;
    assert_eq!((out.exit_code, out.signal), (137, Some(9)), "kill -9 $$: {}", describe(&out));
    let out = env.sh(&s, "kill -TERM $$").await;
    assert_eq!((out.exit_code, out.signal), (143, Some(15)), "kill -TERM $$: {}", describe(&out));

    let marker = format!("30.{}", s.uid);
    let req = ExecRequest { timeout: Some(Duration::from_millis(500)), ..ExecRequest::new(["sleep", marker.as_str()]) };
    // The guard is far below the sleep's 30 s: the timeout must end the command, not the command itself.
    let out = guard("exec with a 500 ms timeout", Duration::from_secs(25), env.backend().exec(&s, req))
        .await
        .unwrap_or_else(|e| panic!("exec with a timeout failed: {e} ({e:?})"));
    assert!(out.timed_out, "sleep with a 500 ms timeout: {}", describe(&out));
    assert_ne!(out.exit_code, 0, "a timed-out command did not report a failure: {}", describe(&out));
    let mut retry = Retry::new("the timed-out sleep is killed");
    loop {
        let procs = env.processes(&s).await;
        if !procs.iter().any(|p| p.contains(&marker)) {
            break;
        }
        retry.wait(format!("{procs:?}")).await;
    }
    env.finish().await;
}

/// 10 MiB of output arrives whole; 4 MiB of stdin arrives whole.
pub async fn exec_large_output<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_large_output", 5) else { return };
    let s = env.running("alice").await;
    let n = 10 << 20;
    let out = env.exec(&s, ExecRequest::new(["head", "-c", &n.to_string(), "/dev/zero"])).await;
    assert_eq!(out.exit_code, 0, "head: exit {} stderr {:?}", out.exit_code, text(&out.stderr));
    assert_eq!(out.stdout.len(), n, "10 MiB of output arrived as {} bytes", out.stdout.len());
    assert!(out.stdout.iter().all(|b| *b == 0), "10 MiB of zeros arrived altered");
    assert!(!out.truncated);

    let input: Vec<u8> = (0..(4u32 << 20)).map(|i| (i % 251) as u8).collect();
    let out = env.exec(&s, ExecRequest { stdin: Some(input.clone()), ..ExecRequest::new(["cat"]) }).await;
    assert_eq!(out.exit_code, 0, "cat: exit {} stderr {:?}", out.exit_code, text(&out.stderr));
    assert_eq!(out.stdout.len(), input.len(), "4 MiB through cat came back as {} bytes", out.stdout.len());
    assert!(out.stdout == input, "4 MiB through cat came back altered");
    env.finish().await;
}

/// Exec in a created-but-stopped or stopped workspace is a Conflict; in an absent one an error.
pub async fn exec_requires_running<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_requires_running", 6) else { return };
    let s = env.spec("alice");

    let r = env.try_exec(&s, ExecRequest::new(["true"])).await;
    assert!(
        matches!(r, Err(Error::NotFound(_) | Error::Conflict(_))),
        "exec in an absent workspace must be NotFound or Conflict: {r:?}"
    );
    env.create(&s).await;
    let r = env.try_exec(&s, ExecRequest::new(["true"])).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "exec in a created, never started workspace: {r:?}");
    let r = guard("exec_stream", OP_GUARD, env.backend().exec_stream(&s, ExecRequest::new(["true"]))).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "exec_stream in a stopped workspace: {:?}", r.map(|_| ()));
    env.start(&s).await;
    assert_eq!(env.sh_ok(&s, "echo ok").await, "ok\n");
    env.stop(&s).await;
    let r = env.try_exec(&s, ExecRequest::new(["true"])).await;
    assert!(matches!(r, Err(Error::Conflict(_))), "exec in a stopped workspace: {r:?}");
    env.finish().await;
}

/// A cwd outside the home (`..`, absolute) is refused; a missing cwd is an error or a failure.
pub async fn exec_cwd_confined<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "exec_cwd_confined", 7) else { return };
    let s = env.running("alice").await;
    for cwd in ["..", "../..", "sub/../../x", "/etc"] {
        let r = env.try_exec(&s, ExecRequest { cwd: Some(cwd.into()), ..ExecRequest::new(["pwd"]) }).await;
        assert!(
            matches!(r, Err(Error::InvalidPath { .. } | Error::InvalidRequest(_))),
            "cwd {cwd:?} leaves the home and must be InvalidPath or InvalidRequest: {:?}",
            r.map(|o| describe(&o))
        );
    }
    let r = env.try_exec(&s, ExecRequest { cwd: Some("no/such/dir".into()), ..ExecRequest::new(["pwd"]) }).await;
    if let Ok(out) = &r {
        assert_ne!(out.exit_code, 0, "cwd no/such/dir ran anyway: {}", describe(out));
    }
    env.finish().await;
}

/// Streaming: output events then exactly one Exit and the end; output really streams (arrives
/// while the command still runs); stdin streams and dropping it closes it.
pub async fn stream_events<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "stream_events", 8) else { return };
    let s = env.running("alice").await;

    let mut hd = env.stream(&s, ExecRequest::new(["sh", "-c", "echo a; sleep 0.2; echo b"])).await;
    let c = collect(&mut hd).await;
    assert_eq!(text(&c.stdout), "a\nb\n", "streamed stdout: {c:?}");
    assert!(c.stderr.is_empty(), "streamed stderr: {c:?}");
    let exits = c.events.iter().filter(|e| matches!(e, ExecEvent::Exit(_))).count();
    assert_eq!(exits, 1, "exactly one Exit: {c:?}");
    assert!(matches!(c.events.last(), Some(ExecEvent::Exit(st)) if st.code == 0 && st.signal.is_none()), "{c:?}");
    match tokio::time::timeout(Duration::from_secs(30), hd.events.recv()).await {
        Ok(None) => {}
        Ok(Some(ev)) => panic!("an event followed Exit: {ev:?}"),
        Err(_) => panic!("the event stream stayed open 30 s after Exit"),
    }

    // Handshake: "a" must arrive while the command waits for our input.
    let mut hd = env.stream(&s, ExecRequest::new(["sh", "-c", "echo a; read x; echo \"b$x\"; echo err >&2"])).await;
    let mut got = Vec::new();
    while !got.ends_with(b"a\n") {
        match next_event(&mut hd).await {
            Some(ExecEvent::Stdout(b)) => got.extend_from_slice(&b),
            other => panic!("waiting for the first line of a streaming exec, got {other:?} after {:?}", text(&got)),
        }
    }
    let tx = hd.stdin.take().expect("a streaming exec without tty has stdin");
    tx.send(b"42\n".to_vec()).await.expect("sending stdin");
    let c = collect(&mut hd).await;
    assert_eq!(text(&c.stdout), "b42\n", "{c:?}");
    assert_eq!(text(&c.stderr), "err\n", "{c:?}");
    assert_eq!(c.exit.map(|e| e.code), Some(0), "{c:?}");
    drop(tx);

    // Dropping stdin closes it: cat ends.
    let mut hd = env.stream(&s, ExecRequest::new(["cat"])).await;
    let tx = hd.stdin.take().expect("stdin");
    tx.send(b"x".to_vec()).await.expect("sending stdin");
    tx.send(b"yz".to_vec()).await.expect("sending stdin");
    drop(tx);
    let c = collect(&mut hd).await;
    assert_eq!(text(&c.stdout), "xyz", "{c:?}");
    assert_eq!(c.exit.map(|e| e.code), Some(0), "cat must end when stdin is dropped: {c:?}");
    env.finish().await;
}

/// Dropping the handle of a running command kills it (the whole command, not just its shell).
pub async fn stream_drop_kills<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "stream_drop_kills", 9) else { return };
    let s = env.running("alice").await;
    let marker = format!("1000.{}", s.uid);
    let mut hd =
        env.stream(&s, ExecRequest::new(["sh", "-c", &format!("echo started; sleep {marker}; touch done")])).await;
    match next_event(&mut hd).await {
        Some(ExecEvent::Stdout(b)) => assert_eq!(text(&b), "started\n"),
        other => panic!("expected the command's first output, got {other:?}"),
    }
    let mut retry = Retry::new("the streamed sleep shows up in the workspace's processes");
    loop {
        let procs = env.processes(&s).await;
        if procs.iter().any(|p| p.starts_with(&format!("sleep {marker}"))) {
            break;
        }
        retry.wait(format!("{procs:?}")).await;
    }
    drop(hd);
    let mut retry = Retry::new("dropping the exec handle kills the command");
    loop {
        let procs = env.processes(&s).await;
        if !procs.iter().any(|p| p.contains(&marker)) {
            break;
        }
        retry.wait(format!("{procs:?}")).await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let r = guard("read_file", OP_GUARD, env.backend().read_file(&s, &wpath("done"))).await;
    assert_eq!(code_of(&r), "not_found", "the shell outlived the drop and ran `touch done`: {:?}", r.map(|_| ()));
    env.finish().await;
}

/// ExecControl::Signal reaches the command: SIGTERM ends `sleep` with code 143.
pub async fn stream_signal<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "stream_signal", 10) else { return };
    let s = env.running("alice").await;
    let mut hd = env.stream(&s, ExecRequest::new(["sh", "-c", "echo ready; exec sleep 1000"])).await;
    match next_event(&mut hd).await {
        Some(ExecEvent::Stdout(b)) => assert_eq!(text(&b), "ready\n"),
        other => panic!("expected the command's first output, got {other:?}"),
    }
    hd.control.send(ExecControl::Signal(15)).await.expect("sending a signal");
    let c = collect(&mut hd).await;
    let exit = c.exit.unwrap_or_else(|| panic!("no Exit after SIGTERM: {c:?}"));
    assert_eq!((exit.code, exit.signal), (143, Some(15)), "{c:?}");
    env.finish().await;
}

/// With a tty: `tty` names a /dev/pts device, `stty size` shows the requested size, Resize changes it.
pub async fn stream_tty<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "stream_tty", 11) else { return };
    if !env.caps().tty {
        println!("SKIP stream_tty: the backend has no tty capability");
        return;
    }
    let s = env.running("alice").await;
    let script = "tty; stty size; while read x; do [ \"$x\" = q ] && exit 7; stty size; done";
    let req = ExecRequest { tty: Some(TtySize { rows: 33, cols: 101 }), ..ExecRequest::new(["sh", "-c", script]) };
    let mut hd = env.stream(&s, req).await;
    let mut out = String::new();
    async fn read_until(hd: &mut warren_core::ExecHandle, out: &mut String, want: &str) {
        while !out.contains(want) {
            match guard("tty output", OP_GUARD, hd.events.recv()).await {
                Some(ExecEvent::Stdout(b)) => out.push_str(&text(&b)),
                Some(ExecEvent::Stderr(b)) => {
                    panic!("a tty exec must merge stderr into the terminal, got stderr {b:?}")
                }
                Some(ExecEvent::Exit(st)) => panic!("tty exec ended early with {st:?}; output {out:?}"),
                None => panic!("tty exec stream ended early; output {out:?}"),
            }
        }
    }
    read_until(&mut hd, &mut out, "33 101").await;
    let first = out.lines().next().unwrap_or_default().trim();
    assert!(first.starts_with("/dev/pts/"), "`tty` printed {first:?}; output {out:?}");

    hd.control.send(ExecControl::Resize(TtySize { rows: 40, cols: 120 })).await.expect("sending a resize");
    let tx = hd.stdin.clone().expect("a tty exec has stdin");
    let mut retry = Retry::new("the terminal size changes after Resize");
    loop {
        tx.send(b"\n".to_vec()).await.expect("sending a line to the tty");
        // Each line makes the loop print the size again.
        let deadline = tokio::time::Instant::now() + Duration::from_millis(500);
        while let Ok(Some(ev)) = tokio::time::timeout_at(deadline, hd.events.recv()).await {
            match ev {
                ExecEvent::Stdout(b) => out.push_str(&text(&b)),
                other => panic!("unexpected tty event {other:?}; output {out:?}"),
            }
            if out.contains("40 120") {
                break;
            }
        }
        if out.contains("40 120") {
            break;
        }
        retry.wait(format!("{out:?}")).await;
    }
    tx.send(b"q\n".to_vec()).await.expect("sending q");
    drop(tx);
    let c = collect(&mut hd).await;
    assert_eq!(c.exit.map(|e| e.code), Some(7), "the tty loop did not end on q: {c:?}; output {out:?}");
    env.finish().await;
}

/// write_file, read_file, list_files, make_dir and delete_file work together.
pub async fn files_round_trip<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "files_round_trip", 12) else { return };
    let s = env.running("alice").await;
    let b = env.backend();

    let p = wpath("a/b/c.txt");
    let r = guard("write_file", OP_GUARD, b.write_file(&s, &p, b"hello".to_vec(), 0o644)).await;
    assert!(r.is_ok(), "write_file a/b/c.txt (creating parents): {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &p)).await;
    assert_eq!(r.as_deref().ok(), Some(&b"hello"[..]), "read_file after write_file: {r:?}");
    let r = guard("write_file", OP_GUARD, b.write_file(&s, &p, b"bye".to_vec(), 0o600)).await;
    assert!(r.is_ok(), "overwrite: {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &p)).await;
    assert_eq!(r.as_deref().ok(), Some(&b"bye"[..]), "read_file after overwrite: {r:?}");

    let all: Vec<u8> = (0..=255u8).cycle().take(70_000).collect();
    let r = guard("write_file", OP_GUARD, b.write_file(&s, &wpath("bin.dat"), all.clone(), 0o644)).await;
    assert!(r.is_ok(), "write_file bin.dat: {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("bin.dat"))).await;
    assert!(r.as_ref().is_ok_and(|d| *d == all), "binary round trip failed: {:?}", r.map(|d| d.len()));
    let r = guard("write_file", OP_GUARD, b.write_file(&s, &wpath("empty"), vec![], 0o644)).await;
    assert!(r.is_ok(), "write_file empty: {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("empty"))).await;
    assert_eq!(r.as_deref().ok(), Some(&b""[..]), "empty file: {r:?}");

    let r = guard("list_files", OP_GUARD, b.list_files(&s, &wpath("a/b"))).await;
    let list = r.unwrap_or_else(|e| panic!("list_files a/b: {e}"));
    assert_eq!(list.len(), 1, "a/b holds one file: {list:?}");
    assert_eq!((list[0].name.as_str(), list[0].kind, list[0].size), ("c.txt", FileKind::File, 3), "{list:?}");
    assert_eq!(list[0].mode & 0o777, 0o600, "mode of c.txt: {list:?}");

    let r = guard("make_dir", OP_GUARD, b.make_dir(&s, &wpath("d/e/f"))).await;
    assert!(r.is_ok(), "make_dir d/e/f: {r:?}");
    let r = guard("make_dir", OP_GUARD, b.make_dir(&s, &wpath("d/e/f"))).await;
    assert!(r.is_ok(), "make_dir of an existing directory: {r:?}");
    let list = guard("list_files", OP_GUARD, b.list_files(&s, &wpath("d/e")))
        .await
        .unwrap_or_else(|e| panic!("list d/e: {e}"));
    assert!(list.iter().any(|e| e.name == "f" && e.kind == FileKind::Dir), "d/e: {list:?}");
    let root = guard("list_files", OP_GUARD, b.list_files(&s, &WorkspacePath::root()))
        .await
        .unwrap_or_else(|e| panic!("list .: {e}"));
    for (name, kind) in [("a", FileKind::Dir), ("d", FileKind::Dir), ("bin.dat", FileKind::File)] {
        assert!(root.iter().any(|e| e.name == name && e.kind == kind), "root lacks {name} {kind:?}: {root:?}");
    }
    assert!(!root.iter().any(|e| e.name == "." || e.name == ".."), "listing shows . or ..: {root:?}");

    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("d"))).await;
    assert!(r.is_err(), "read_file of a directory must fail: {:?}", r.map(|d| d.len()));
    let r = guard("list_files", OP_GUARD, b.list_files(&s, &wpath("nope"))).await;
    assert_eq!(code_of(&r), "not_found", "list of a missing directory: {r:?}");

    let r = guard("delete_file", OP_GUARD, b.delete_file(&s, &p, false)).await;
    assert!(r.is_ok(), "delete a/b/c.txt: {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &p)).await;
    assert_eq!(code_of(&r), "not_found", "read after delete: {:?}", r.map(|d| d.len()));
    let r = guard("delete_file", OP_GUARD, b.delete_file(&s, &wpath("d"), false)).await;
    assert!(r.is_err(), "non-recursive delete of a non-empty directory must fail");
    let r = guard("delete_file", OP_GUARD, b.delete_file(&s, &wpath("d"), true)).await;
    assert!(r.is_ok(), "recursive delete of d: {r:?}");
    let root = guard("list_files", OP_GUARD, b.list_files(&s, &WorkspacePath::root()))
        .await
        .unwrap_or_else(|e| panic!("list .: {e}"));
    assert!(!root.iter().any(|e| e.name == "d"), "d survived a recursive delete: {root:?}");
    env.finish().await;
}

/// Files written by exec are readable by the file API and vice versa, owned by the uid.
pub async fn files_shared_with_exec<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "files_shared_with_exec", 13) else { return };
    let s = env.running("alice").await;

    env.sh_ok(&s, "mkdir -p x/y && printf 'from exec' > x/y/fromexec.txt").await;
    let r = guard("read_file", OP_GUARD, env.backend().read_file(&s, &wpath("x/y/fromexec.txt"))).await;
    assert_eq!(r.as_deref().ok(), Some(&b"from exec"[..]), "a file written by exec, read by read_file: {r:?}");

    let r = guard(
        "write_file",
        OP_GUARD,
        env.backend().write_file(&s, &wpath("api/new/fromapi.txt"), b"from api".to_vec(), 0o640),
    )
    .await;
    assert!(r.is_ok(), "write_file api/new/fromapi.txt: {r:?}");
    assert_eq!(env.sh_ok(&s, "cat api/new/fromapi.txt").await, "from api");
    let want = format!("{} {} 640\n{} {}\n", s.uid, s.gid, s.uid, s.uid);
    let got = env.sh_ok(&s, "stat -c '%u %g %a' api/new/fromapi.txt; stat -c '%u %g' api/new").await;
    assert_eq!(got, want, "owner and mode of a file (and its created parent) written by write_file");
    env.sh_ok(&s, "echo more >> api/new/fromapi.txt && touch api/new/sibling").await;
    let r = guard("read_file", OP_GUARD, env.backend().read_file(&s, &wpath("api/new/fromapi.txt"))).await;
    assert_eq!(r.as_deref().ok(), Some(&b"from apimore\n"[..]), "{r:?}");

    let r = guard("make_dir", OP_GUARD, env.backend().make_dir(&s, &wpath("made/deep"))).await;
    assert!(r.is_ok(), "make_dir: {r:?}");
    env.sh_ok(&s, "touch made/deep/x && rm made/deep/x").await;
    assert_eq!(env.sh_ok(&s, "stat -c %u made made/deep | sort -u").await.trim(), s.uid.to_string());

    let r = guard("delete_file", OP_GUARD, env.backend().delete_file(&s, &wpath("x"), true)).await;
    assert!(r.is_ok(), "deleting a tree made by exec: {r:?}");
    let out = env.sh(&s, "test -e x").await;
    assert_ne!(out.exit_code, 0, "x still exists for exec after delete_file");

    if let Some(hf) = env.backend().host_files(&s) {
        let md = std::fs::symlink_metadata(hf.dir.join("api/new/fromapi.txt")).expect("the file on the host");
        assert_eq!((md.uid(), md.gid()), (s.uid, s.gid), "owner on the host");
    }
    env.finish().await;
}

/// Paths stay inside the workspace: `..` and absolute paths are InvalidPath, symlinks planted by
/// the workspace that lead out (`leak -> /etc/passwd`, `up -> ..`) are refused.
pub async fn files_confined<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "files_confined", 14) else { return };
    for bad in ["../x", "a/../../x", "/etc/passwd", "/"] {
        let r = WorkspacePath::new(bad);
        assert!(is_invalid_path(&r), "{bad:?} must be InvalidPath: {r:?}");
    }
    let s = env.running("alice").await;
    let b = env.backend();
    env.sh_ok(&s, "ln -s /etc/passwd leak; ln -s .. up; printf in > target.txt; ln -s target.txt inner; mkdir d; ln -s ../target.txt d/rel").await;
    let passwd_before = std::fs::read("/etc/passwd").expect("reading the host's /etc/passwd");

    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("inner"))).await;
    assert_eq!(r.as_deref().ok(), Some(&b"in"[..]), "a symlink inside the workspace must work: {r:?}");
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("d/rel"))).await;
    assert_eq!(r.as_deref().ok(), Some(&b"in"[..]), "a relative symlink staying inside must work: {r:?}");

    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("leak"))).await;
    assert!(is_invalid_path(&r), "read_file through leak -> /etc/passwd: {:?}", r.map(|d| text(&d)));
    let r = guard("read_file", OP_GUARD, b.read_file(&s, &wpath("up/x"))).await;
    assert!(is_invalid_path(&r), "read_file through up -> ..: {:?}", r.map(|d| text(&d)));
    let r = guard("list_files", OP_GUARD, b.list_files(&s, &wpath("up"))).await;
    assert!(is_invalid_path(&r), "list_files of up -> ..: {r:?}");
    let r = guard("write_file", OP_GUARD, b.write_file(&s, &wpath("up/x"), b"escaped".to_vec(), 0o644)).await;
    assert!(is_invalid_path(&r), "write_file through up -> ..: {r:?}");
    let r = guard("make_dir", OP_GUARD, b.make_dir(&s, &wpath("up/newdir"))).await;
    assert!(r.is_err(), "make_dir through up -> .. must fail");
    if let Some(hf) = b.host_files(&s) {
        let parent = hf.dir.parent().expect("the home has a parent");
        assert!(!parent.join("x").exists(), "write_file through up/x created {}", parent.join("x").display());
        assert!(!parent.join("newdir").exists(), "make_dir through up/ created a directory outside the home");
        let home_name = hf.dir.file_name().expect("home name").to_string_lossy().into_owned();
        let r = guard("delete_file", OP_GUARD, b.delete_file(&s, &wpath(&format!("up/{home_name}")), true)).await;
        assert!(r.is_err(), "delete_file through up -> .. must fail");
        assert!(hf.dir.exists(), "delete_file through up -> .. removed the home");
    }
    // Writing to the name of a symlink must not write through it.
    let _ = guard("write_file", OP_GUARD, b.write_file(&s, &wpath("leak"), b"pwned\n".to_vec(), 0o644)).await;
    assert_eq!(
        std::fs::read("/etc/passwd").expect("reading /etc/passwd"),
        passwd_before,
        "write_file wrote through a symlink"
    );
    env.finish().await;
}

/// A file written by exec survives stop and start.
pub async fn persistence_stop_start<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "persistence_stop_start", 15) else { return };
    let s = env.running("alice").await;
    env.sh_ok(&s, "mkdir -p keep && echo persisted > keep/file").await;
    env.stop(&s).await;
    let r = guard("read_file", OP_GUARD, env.backend().read_file(&s, &wpath("keep/file"))).await;
    if let Ok(d) = &r {
        assert_eq!(text(d), "persisted\n", "file content while stopped");
    }
    env.start(&s).await;
    assert_eq!(env.sh_ok(&s, "cat keep/file").await, "persisted\n", "file after stop/start");
    env.finish().await;
}

/// "Warren restarted": a new backend on the same state dir sees the same state (Running stays
/// Running, Stopped stays Stopped), exec works, files are still there.
pub async fn persistence_restart<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "persistence_restart", 16) else { return };
    let s = env.running("alice").await;
    let idle = env.spec("bob");
    env.create(&idle).await;
    env.sh_ok(&s, "echo persisted > file").await;

    env.reopen();
    let st = env.status(&s).await;
    assert_eq!(st.state, State::Running, "a running workspace after reopening the backend: {st:?}");
    let st = env.status(&idle).await;
    assert_eq!(st.state, State::Stopped, "a stopped workspace after reopening the backend: {st:?}");
    assert_eq!(env.sh_ok(&s, "cat file").await, "persisted\n", "exec and file after reopening");
    let again = env.start(&s).await;
    assert_eq!(again.state, State::Running);

    env.stop(&s).await;
    env.reopen();
    let st = env.status(&s).await;
    assert_eq!(st.state, State::Stopped, "a workspace stopped before the reopen: {st:?}");
    env.start(&s).await;
    assert_eq!(env.sh_ok(&s, "cat file").await, "persisted\n", "file after stop, reopen, start");
    env.start(&idle).await;
    assert_eq!(env.sh_ok(&idle, "echo ok").await, "ok\n");
    env.finish().await;
}

/// Two users: B can neither read nor list nor write A's home, and (with process isolation)
/// cannot see A's processes; without it, cannot signal them.
pub async fn isolation_between_users<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "isolation_between_users", 17) else { return };
    let a = env.running("alice").await;
    let bb = env.running("bob").await;
    env.sh_ok(&a, "printf topsecret > secret.txt; chmod 644 secret.txt").await;

    match env.backend().host_files(&a) {
        Some(hf) => {
            let home = hf.dir.to_string_lossy().into_owned();
            let parent = hf.dir.parent().expect("the home has a parent").to_string_lossy().into_owned();
            let out = env.exec(&bb, ExecRequest::new(["cat", &format!("{home}/secret.txt")])).await;
            assert_ne!(out.exit_code, 0, "bob read alice's file: {}", describe(&out));
            assert!(!text(&out.stdout).contains("topsecret"), "bob read alice's file: {}", describe(&out));
            let out = env.exec(&bb, ExecRequest::new(["ls", "-a", &home])).await;
            assert_ne!(out.exit_code, 0, "bob listed alice's home: {}", describe(&out));
            let out = env.exec(&bb, ExecRequest::new(["ls", "-a", &parent])).await;
            assert_ne!(out.exit_code, 0, "bob listed the directory of all homes {parent}: {}", describe(&out));
            let out = env.sh(&bb, &format!("echo planted > '{home}/planted'")).await;
            assert_ne!(out.exit_code, 0, "bob wrote into alice's home: {}", describe(&out));
            let r = guard("read_file", OP_GUARD, env.backend().read_file(&a, &wpath("planted"))).await;
            assert_eq!(code_of(&r), "not_found", "bob planted a file in alice's home");
        }
        None => println!("isolation_between_users: no host_files, not checking host paths"),
    }

    let marker = format!("1000.{}", a.uid);
    let mut hd = env.stream(&a, ExecRequest::new(["sh", "-c", &format!("echo $$; exec sleep {marker}")])).await;
    let pid = match next_event(&mut hd).await {
        Some(ExecEvent::Stdout(b)) => text(&b).trim().to_owned(),
        other => panic!("expected alice's pid, got {other:?}"),
    };
    let mut retry = Retry::new("alice's sleep shows in her own process list");
    loop {
        let procs = env.processes(&a).await;
        if procs.iter().any(|p| p.contains(&marker)) {
            break;
        }
        retry.wait(format!("{procs:?}")).await;
    }
    if env.caps().process_isolation {
        let procs = env.processes(&bb).await;
        assert!(!procs.iter().any(|p| p.contains(&marker)), "bob sees alice's process: {procs:?}");
    } else {
        let out = env.sh(&bb, &format!("kill -9 {pid}")).await;
        assert_ne!(out.exit_code, 0, "bob killed alice's process {pid}: {}", describe(&out));
        let procs = env.processes(&a).await;
        assert!(procs.iter().any(|p| p.contains(&marker)), "alice's process died after bob's kill: {procs:?}");
    }
    drop(hd);
    env.finish().await;
}

/// With pids = 32, a loop starting 100 sleeps cannot start them all, and the workspace works afterwards.
pub async fn limits_pids<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "limits_pids", 18) else { return };
    if !env.caps().pids_limit {
        println!("SKIP limits_pids: the backend does not enforce a pids limit");
        return;
    }
    let s = env.running_with("alice", |s| s.limits.pids = Some(32)).await;
    let out = env.sh(&s, "for i in $(seq 1 100); do sleep 5 & done; wait").await;
    let err = text(&out.stderr).to_lowercase();
    assert!(
        out.exit_code != 0 || err.contains("fork") || err.contains("resource"),
        "100 processes started under a pids limit of 32: {}",
        describe(&out)
    );
    let mut retry = Retry::new("the workspace runs commands again after hitting its pids limit");
    loop {
        match env.try_exec(&s, ExecRequest::new(["echo", "alive"])).await {
            Ok(o) if o.exit_code == 0 && o.stdout == b"alive\n" => break,
            other => retry.wait(format!("{:?}", other.map(|o| describe(&o)))).await,
        }
    }
    env.finish().await;
}

/// With a 64 MiB memory limit, a process buffering 600 MiB fails, and the workspace works afterwards.
pub async fn limits_memory<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "limits_memory", 19) else { return };
    if !env.caps().memory_limit {
        println!("SKIP limits_memory: the backend does not enforce a memory limit");
        return;
    }
    let limit = 64u64 << 20;
    let s = env.running_with("alice", |s| s.limits.memory_bytes = Some(limit)).await;
    // `tail` keeps a newline-free input in memory: 600 MiB of it cannot fit in 64 MiB.
    let out = env.sh(&s, "head -c 600M /dev/zero | tail > /dev/null").await;
    assert_ne!(out.exit_code, 0, "600 MiB fit under a 64 MiB memory limit: {}", describe(&out));
    assert_eq!(env.sh_ok(&s, "echo alive").await, "alive\n", "the workspace after its memory limit was hit");
    let st = guard("stats", OP_GUARD, env.backend().stats(&s)).await.unwrap_or_else(|e| panic!("stats: {e}"));
    assert_eq!(st.memory_limit_bytes, Some(limit), "stats do not show the memory limit: {st:?}");
    env.finish().await;
}

/// With a disk limit, no single file can grow past it (the limit holds for files written by
/// commands, not only through the API), and smaller files are written as usual.
pub async fn limits_disk<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "limits_disk", 22) else { return };
    let limit = 8u64 << 20;
    let s = env.running_with("alice", |s| s.limits.disk_bytes = Some(limit)).await;
    assert_eq!(env.sh_ok(&s, "head -c 1048576 /dev/zero > small; wc -c < small").await.trim(), "1048576");
    let out = env.sh(&s, "head -c 16777216 /dev/zero > big").await;
    assert_ne!(out.exit_code, 0, "a 16 MiB file was written under an 8 MiB disk limit: {}", describe(&out));
    let size: u64 = env.sh_ok(&s, "wc -c < big").await.trim().parse().expect("a size");
    assert!(size <= limit, "the file grew to {size} bytes past the {limit}-byte disk limit");
    assert_eq!(
        env.sh_ok(&s, "rm big small; echo alive").await,
        "alive\n",
        "the workspace after its disk limit was hit"
    );
    env.finish().await;
}

/// `/tmp` is a private scratch directory the workspace can write (sticky, so one user's files
/// there are theirs), and the root filesystem and `/usr` are not writable.
pub async fn scratch_and_root<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "scratch_and_root", 23) else { return };
    let s = env.running("alice").await;
    let out = env.sh_ok(&s, "f=/tmp/warren-scratch-$$; echo kept > $f; cat $f; rm $f; stat -c %a /tmp").await;
    assert_eq!(out, "kept\n1777\n", "/tmp is not a writable, sticky scratch directory");
    for dir in ["/", "/usr", "/etc"] {
        let out = env.sh(&s, &format!("echo x > {}/warren-probe-$$", dir.trim_end_matches('/'))).await;
        assert_ne!(out.exit_code, 0, "the workspace wrote into {dir}: {}", describe(&out));
    }
    env.finish().await;
}

/// Stats of a running workspace count its processes and grow with its files.
pub async fn stats<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "stats", 20) else { return };
    let s = env.running("alice").await;
    let marker = format!("1000.{}", s.uid);
    let mut hd = env.stream(&s, ExecRequest::new(["sh", "-c", &format!("echo go; exec sleep {marker}")])).await;
    let first = next_event(&mut hd).await;
    assert!(matches!(first, Some(ExecEvent::Stdout(_))), "expected output, got {first:?}");

    let st = guard("stats", OP_GUARD, env.backend().stats(&s)).await.unwrap_or_else(|e| panic!("stats: {e} ({e:?})"));
    assert!(st.pids >= 1, "stats of a workspace running sleep show {} pids: {st:?}", st.pids);
    let before = st.disk_bytes;
    let data: Vec<u8> = (0..(1u32 << 20)).map(|i| (i % 253) as u8 + 1).collect();
    let r = guard("write_file", OP_GUARD, env.backend().write_file(&s, &wpath("big.bin"), data, 0o644)).await;
    assert!(r.is_ok(), "write_file big.bin: {r:?}");
    let mut retry = Retry::new("disk_bytes grows by 1 MiB after writing a 1 MiB file");
    loop {
        let st = guard("stats", OP_GUARD, env.backend().stats(&s)).await.unwrap_or_else(|e| panic!("stats: {e}"));
        if st.disk_bytes >= before + (1 << 20) {
            break;
        }
        retry.wait(format!("before {before}, now {st:?}")).await;
    }
    // Memory is what the workspace's processes hold, not the page cache of the files they
    // read and wrote: 128 MiB written and read back leave it far below that.
    let out = env.sh(&s, "head -c 134217728 /dev/zero > cache.bin && cat cache.bin > /dev/null").await;
    assert_eq!(out.exit_code, 0, "writing and reading 128 MiB: {}", describe(&out));
    let st = guard("stats", OP_GUARD, env.backend().stats(&s)).await.unwrap_or_else(|e| panic!("stats: {e}"));
    assert!(st.memory_bytes < 48 << 20, "file I/O counted as memory in use: {st:?}");
    env.sh_ok(&s, "rm cache.bin").await;
    drop(hd);
    env.finish().await;
}

/// A running workspace can be frozen (for snapshots without stopping) and thawed: a background
/// writer makes no progress while frozen and resumes after. Backends that cannot freeze must
/// say so in their capabilities and answer `Unsupported`.
pub async fn freeze<B: Backend>(h: &Harness<B>) {
    let Some(mut env) = Env::new(h, "freeze", 21) else { return };
    let s = env.running("alice").await;
    if !env.backend().capabilities().freeze {
        let r = guard("freeze", OP_GUARD, env.backend().freeze(&s, true)).await;
        assert!(
            matches!(r, Err(warren_core::Error::Unsupported(_))),
            "a backend without freeze must say Unsupported: {r:?}"
        );
        println!("freeze: capability is false; Unsupported checked");
        env.finish().await;
        return;
    }
    let mut hd =
        env.stream(&s, ExecRequest::new(["sh", "-c", "echo go; while :; do echo x >> ticks; sleep 0.01; done"])).await;
    let first = next_event(&mut hd).await;
    assert!(matches!(first, Some(ExecEvent::Stdout(_))), "expected output, got {first:?}");
    let mut retry = Retry::new("the writer makes progress before the freeze");
    while ticks(env.backend(), &s).await < 20 {
        retry.wait("ticks is still short".to_owned()).await;
    }
    guard("freeze", OP_GUARD, env.backend().freeze(&s, true)).await.unwrap_or_else(|e| panic!("freeze: {e}"));
    let frozen_at = ticks(env.backend(), &s).await;
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    assert_eq!(ticks(env.backend(), &s).await, frozen_at, "a frozen workspace kept writing");
    guard("thaw", OP_GUARD, env.backend().freeze(&s, false)).await.unwrap_or_else(|e| panic!("thaw: {e}"));
    let mut retry = Retry::new("the writer resumes after thaw");
    while ticks(env.backend(), &s).await <= frozen_at {
        retry.wait("ticks did not grow after thaw".to_owned()).await;
    }
    drop(hd);
    env.finish().await;
}

async fn ticks<B: Backend>(b: &B, s: &warren_core::WorkspaceSpec) -> usize {
    b.read_file(s, &wpath("ticks")).await.map(|d| d.len()).unwrap_or(0)
}
