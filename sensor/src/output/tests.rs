use super::*;
use crate::alert::*;

fn alert(n: u32, exe: &str) -> Alert {
    Alert {
        ts: rfc3339(1_700_000_000_123_456_789),
        rule: "key-file-open",
        severity: Severity::High,
        score: 70,
        attack: "T1552.004",
        host: "host one".into(),
        process: ProcessCtx {
            pid: n,
            ppid: 1,
            uid: 1001,
            comm: "cat".into(),
            exe: exe.into(),
            cmdline: format!("cat k{n}"),
            allow_bypass: None,
            ..Default::default()
        },
        target: Target::File {
            path: "/etc/ssl/private/ca.key".into(),
            dev: 2049,
            inode: 12,
        },
        incident: format!("inc-{n}"),
        count: 1,
        lineage: None,
        factors: Vec::new(),
        message: "m".into(),
        open: None,
        memory: None,
        dump: None,
        flow: None,
        kernel: None,
        raw: None,
        agent: None,
        code: None,
        keyring: None,
        // As send() marks an enforceable rule's alert.
        action: Some("observed"),
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("keysentry-alert-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn cfg() -> crate::config::Alerts {
    crate::config::Alerts {
        stdout: false,
        ..Default::default()
    }
}

fn pids(text: &str) -> Vec<u64> {
    text.lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            v["process"]["pid"].as_u64().unwrap()
        })
        .collect()
}

#[test]
fn file_output_rotates_by_size() {
    let d = tmp("rotate");
    let path = d.join("alerts.jsonl");
    let line_len = json_line(&Line::Alert(alert(1000, "/usr/bin/cat")))
        .unwrap()
        .len() as u64;
    let per_file = 10;
    let c = crate::config::Alerts {
        file: Some(path.clone()),
        file_max_bytes: line_len * per_file,
        file_keep: 2,
        ..cfg()
    };
    let metrics = Metrics::new().unwrap();
    let out = Outputs::start(&c, metrics.clone()).unwrap();
    // 45 alerts of equal length: 10 per file; the oldest two files
    // (pids 1000..1019) were rotated away, the newest 25 remain.
    for n in 1000..1045 {
        out.send(alert(n, "/usr/bin/cat"));
    }
    out.close();
    let read = |p: &Path| std::fs::read_to_string(p).unwrap();
    let mut all = pids(&read(&d.join("alerts.jsonl.2")));
    assert_eq!(all.len(), 10);
    all.extend(pids(&read(&d.join("alerts.jsonl.1"))));
    let current = pids(&read(&path));
    assert_eq!(current.len(), 5);
    all.extend(current);
    assert_eq!(all, (1020..1045).collect::<Vec<u64>>());
    for f in ["alerts.jsonl", "alerts.jsonl.1", "alerts.jsonl.2"] {
        assert!(std::fs::metadata(d.join(f)).unwrap().len() <= line_len * per_file);
    }
    assert!(!d.join("alerts.jsonl.3").exists());
    assert_eq!(metrics.output_dropped.with_label_values(&["file"]).get(), 0);
    // A restart appends to the current file, counting its size.
    let out = Outputs::start(&c, metrics).unwrap();
    for n in 2000..2006 {
        out.send(alert(n, "/usr/bin/cat"));
    }
    out.close();
    assert_eq!(pids(&read(&path)), (2005..2006).collect::<Vec<u64>>());
    let mut r1 = pids(&read(&d.join("alerts.jsonl.1")));
    r1.sort();
    assert_eq!(
        r1,
        [1040, 1041, 1042, 1043, 1044, 2000, 2001, 2002, 2003, 2004]
    );
    std::fs::remove_dir_all(&d).unwrap();
}

/// A minimal RFC 5424 parser for the tests: header fields, SD params
/// (unescaped) and MSG.
struct Parsed {
    pri: u32,
    fields: Vec<String>,
    sd_id: String,
    params: Vec<(String, String)>,
    msg: Vec<u8>,
}

fn parse5424(m: &[u8]) -> Parsed {
    let text = std::str::from_utf8(m).unwrap();
    let rest = text.strip_prefix('<').unwrap();
    let (pri, rest) = rest.split_once('>').unwrap();
    let rest = rest.strip_prefix("1 ").expect("VERSION 1");
    let mut fields = Vec::new();
    let mut rest = rest;
    for _ in 0..5 {
        let (f, r) = rest.split_once(' ').unwrap();
        fields.push(f.to_string());
        rest = r;
    }
    let mut chars = rest.char_indices().peekable();
    assert_eq!(chars.next().map(|c| c.1), Some('['));
    let mut sd_id = String::new();
    for (_, c) in chars.by_ref() {
        if c == ' ' {
            break;
        }
        sd_id.push(c);
    }
    let mut params = Vec::new();
    let end;
    loop {
        let mut name = String::new();
        for (_, c) in chars.by_ref() {
            if c == '=' {
                break;
            }
            assert!(c.is_ascii_graphic() && c != ']' && c != '"', "{c:?}");
            name.push(c);
        }
        assert_eq!(chars.next().map(|c| c.1), Some('"'));
        let mut value = String::new();
        loop {
            let (_, c) = chars.next().unwrap();
            match c {
                '\\' => {
                    let (_, n) = chars.next().unwrap();
                    assert!(matches!(n, '"' | '\\' | ']'), "bad escape {n:?}");
                    value.push(n);
                }
                '"' => break,
                ']' => panic!("unescaped ]"),
                c => value.push(c),
            }
        }
        params.push((name, value));
        match chars.next().unwrap() {
            (_, ' ') => continue,
            (i, ']') => {
                end = i + 1;
                break;
            }
            (_, c) => panic!("after a param: {c:?}"),
        }
    }
    let msg = rest.as_bytes()[end..]
        .strip_prefix(b" \xEF\xBB\xBF")
        .expect("SP BOM")
        .to_vec();
    Parsed {
        pri: pri.parse().unwrap(),
        fields,
        sd_id,
        params,
        msg,
    }
}

#[test]
fn syslog_output_sends_rfc5424() {
    let d = tmp("syslog");
    let sock = d.join("log.sock");
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    let c = crate::config::Alerts {
        syslog: true,
        syslog_socket: sock.clone(),
        syslog_facility: "local3".into(),
        ..cfg()
    };
    let metrics = Metrics::new().unwrap();
    let out = Outputs::start(&c, metrics.clone()).unwrap();
    let nasty = r#"/opt/we"ird]\path/x"#;
    let mut sent = vec![alert(7, nasty), alert(8, "/usr/bin/cat")];
    sent[1].severity = Severity::Critical;
    sent[1].target = Target::Process {
        pid: 42,
        comm: "vault".into(),
        exe: "/usr/bin/vault".into(),
        protected: None,
        container: None,
        cgroup_id: 0,
    };
    for a in &sent {
        out.send(a.clone());
    }
    out.close();
    rx.set_nonblocking(true).unwrap();
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while let Ok(n) = rx.recv(&mut buf) {
        got.push(parse5424(&buf[..n]));
    }
    assert_eq!(got.len(), 2);
    let p = &got[0];
    // local3 = 19; high -> err (3).
    assert_eq!(p.pri, 19 * 8 + 3);
    assert_eq!(p.fields[0], "2023-11-14T22:13:20.123456Z");
    assert_eq!(p.fields[1], "hostone", "no spaces in HOSTNAME");
    assert_eq!(p.fields[2], "keysentry");
    assert_eq!(p.fields[3], std::process::id().to_string());
    assert_eq!(p.fields[4], "key-file-open");
    assert_eq!(p.sd_id, SD_ID);
    let param = |p: &Parsed, k: &str| {
        p.params
            .iter()
            .find(|(n, _)| n == k)
            .map(|(_, v)| v.clone())
            .unwrap_or_else(|| panic!("no {k}"))
    };
    assert_eq!(param(p, "exe"), nasty, "escaped and unescaped");
    assert_eq!(param(p, "target"), "/etc/ssl/private/ca.key");
    assert_eq!(param(p, "rule"), "key-file-open");
    assert_eq!(param(p, "severity"), "high");
    assert_eq!(param(p, "pid"), "7");
    assert_eq!(param(p, "uid"), "1001");
    assert_eq!(param(p, "incident"), "inc-7");
    let json: serde_json::Value = serde_json::from_slice(&p.msg).unwrap();
    assert_eq!(json, serde_json::to_value(&sent[0]).unwrap());
    let p = &got[1];
    assert_eq!(p.pri, 19 * 8 + 2, "critical -> crit");
    assert_eq!(param(p, "target"), "/usr/bin/vault");
    assert_eq!(param(p, "target_pid"), "42");
    assert_eq!(
        metrics.output_dropped.with_label_values(&["syslog"]).get(),
        0
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn a_blocked_output_drops_and_counts_while_others_get_everything() {
    let d = tmp("blocked");
    let sock = d.join("log.sock");
    // Bound, never read while the alerts are sent: the syslog thread
    // blocks once the socket's queue is full.
    let rx = std::os::unix::net::UnixDatagram::bind(&sock).unwrap();
    let path = d.join("alerts.jsonl");
    let c = crate::config::Alerts {
        file: Some(path.clone()),
        syslog: true,
        syslog_socket: sock.clone(),
        queue: 4,
        ..cfg()
    };
    let metrics = Metrics::new().unwrap();
    let out = Outputs::start(&c, metrics.clone()).unwrap();
    const N: u64 = 2000;
    for n in 0..N {
        out.send(alert(n as u32, "/usr/bin/cat"));
        // Paced by the file output (never by syslog's): the file keeps
        // up, the blocked syslog output falls behind.
        let until = std::time::Instant::now() + std::time::Duration::from_secs(30);
        while out.handled("file") < Some(n + 1) {
            assert!(std::time::Instant::now() < until, "file output stuck");
            std::thread::yield_now();
        }
    }
    let syslog_dropped = metrics.output_dropped.with_label_values(&["syslog"]);
    assert!(
        syslog_dropped.get() > 0,
        "the blocked syslog output dropped nothing"
    );
    // Unblock: read what the socket holds (room for the few alerts
    // still queued), let the outputs finish, read the rest.
    rx.set_nonblocking(true).unwrap();
    let mut received = 0u64;
    let drain = |received: &mut u64| {
        let mut buf = vec![0u8; 65536];
        while let Ok(len) = rx.recv(&mut buf) {
            let p = parse5424(&buf[..len]);
            let v: serde_json::Value = serde_json::from_slice(&p.msg).unwrap();
            assert!(v["process"]["pid"].as_u64().unwrap() < N);
            *received += 1;
        }
    };
    drain(&mut received);
    out.close();
    drain(&mut received);
    // Nothing silently lost: received + counted drops = sent.
    assert_eq!(received + syslog_dropped.get(), N);
    assert!(received < N);
    let file_pids = pids(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(
        file_pids,
        (0..N).collect::<Vec<u64>>(),
        "file got every alert"
    );
    assert_eq!(metrics.output_dropped.with_label_values(&["file"]).get(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}

/// Shutdown: what is still queued is written before the outputs close
/// (bounded); the file holds every alert sent.
#[test]
fn alerts_queued_at_shutdown_are_written() {
    let d = tmp("shutdown");
    let path = d.join("alerts.jsonl");
    let c = crate::config::Alerts {
        file: Some(path.clone()),
        ..cfg()
    };
    let metrics = Metrics::new().unwrap();
    let out = Outputs::start(&c, metrics.clone()).unwrap();
    for n in 0..500 {
        out.send(alert(n, "/usr/bin/cat"));
    }
    out.close_within(std::time::Duration::from_secs(60));
    let written = pids(&std::fs::read_to_string(&path).unwrap());
    assert_eq!(written, (0..500).collect::<Vec<u64>>());
    assert_eq!(metrics.output_dropped.with_label_values(&["file"]).get(), 0);
    std::fs::remove_dir_all(&d).unwrap();
}
