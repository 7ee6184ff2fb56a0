use super::*;
use crate::alert::ProcessCtx;

fn alert(rule: &'static str, pid: u32, target: Target, score: u32) -> Alert {
    Alert {
        ts: format!("t{score:03}"),
        rule,
        severity: Severity::Low,
        score,
        attack: "T",
        host: "h".into(),
        process: ProcessCtx {
            pid,
            ppid: 1,
            uid: 0,
            comm: "a".into(),
            exe: "/a".into(),
            cmdline: "a".into(),
            allow_bypass: None,
            ..Default::default()
        },
        target,
        incident: String::new(),
        count: 1,
        lineage: None,
        factors: Vec::new(),
        message: "m".into(),
        open: None,
        memory: None,
        dump: None,
        flow: None,
        action: None,
        kernel: None,
        raw: None,
        agent: None,
        code: None,
        keyring: None,
    }
}

fn proc_t(pid: u32) -> Target {
    Target::Process {
        pid,
        comm: "vault".into(),
        exe: "/v".into(),
        protected: None,
        container: None,
        cgroup_id: 0,
    }
}

fn file_t(inode: u64) -> Target {
    Target::File {
        path: "/k".into(),
        dev: 1,
        inode,
    }
}

fn tree(pids: &[u32]) -> Lineage {
    Lineage {
        tree: pids.iter().map(|p| (*p, 7)).collect(),
        target_protected: true,
        extra_keys: Vec::new(),
    }
}

fn alerts(out: &[Out]) -> Vec<&Alert> {
    out.iter()
        .filter_map(|o| match o {
            Out::Alert(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn last_incident(out: &[Out]) -> &Incident {
    out.iter()
        .rev()
        .find_map(|o| match o {
            Out::Incident(i) => Some(i),
            _ => None,
        })
        .expect("an incident record")
}

const S: u64 = 1_000_000_000;

#[test]
fn chain_by_target_and_tree_scores_stages() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    // Actor 10 (child of shell 9) attaches to vault 500, then reads
    // its memory; a sibling 11 opens a key file.
    assert!(c.add(
        alert("ptrace-attach", 10, proc_t(500), 80),
        S,
        &tree(&[10, 9]),
        &mut out
    ));
    let id = alerts(&out)[0].incident.clone();
    assert_eq!(last_incident(&out).score, 80);
    c.add(
        alert("proc-mem-open", 10, proc_t(500), 85),
        2 * S,
        &tree(&[10, 9]),
        &mut out,
    );
    c.add(
        alert("key-file-open", 11, file_t(5), 70),
        3 * S,
        &tree(&[11, 9]),
        &mut out,
    );
    let inc = last_incident(&out);
    assert_eq!(inc.id, id);
    assert_eq!(inc.steps.len(), 3);
    assert_eq!(inc.stages, vec!["access", "dump"]);
    assert_eq!(inc.score, 95, "85 + dump 10");
    assert_eq!(inc.severity, Severity::Critical);
    assert!(alerts(&out).iter().all(|a| a.incident == id));
    // An unrelated actor and target open their own incident.
    c.add(
        alert("key-file-open", 40, file_t(6), 70),
        4 * S,
        &tree(&[40, 39]),
        &mut out,
    );
    assert_ne!(last_incident(&out).id, id);
}

#[test]
fn low_alerts_fold_but_neither_open_nor_join_incidents() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    // A shell's child attaches to its own program (low), then a
    // sibling dumps vault (high): the low one stays out of it.
    let mut low = alert("ptrace-attach", 10, proc_t(600), 30);
    low.incident = "inc-own".into();
    assert!(c.add(low.clone(), S, &tree(&[10, 9]), &mut out));
    assert!(
        out.iter().all(|o| matches!(o, Out::Alert(_))),
        "a low alert opens no incident"
    );
    assert_eq!(alerts(&out)[0].incident, "inc-own");
    c.add(
        alert("proc-mem-open", 11, proc_t(500), 85),
        2 * S,
        &tree(&[11, 9]),
        &mut out,
    );
    let inc = last_incident(&out);
    assert_eq!(inc.steps.len(), 1);
    // Its repeat folds into a count, still outside the incident.
    assert!(!c.add(low, 3 * S, &tree(&[10, 9]), &mut out));
    assert_eq!(last_incident(&out).steps.len(), 1);
}

#[test]
fn an_incident_lists_at_most_max_steps_and_counts_the_rest() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    // 200 processes open the same key within the window: one incident.
    for pid in 0..200u32 {
        assert!(c.add(
            alert("key-file-open", 1000 + pid, file_t(5), 70),
            S + u64::from(pid),
            &tree(&[1000 + pid]),
            &mut out
        ));
    }
    assert_eq!(alerts(&out).len(), 200);
    let records: Vec<&Incident> = out
        .iter()
        .filter_map(|o| match o {
            Out::Incident(i) => Some(i),
            _ => None,
        })
        .collect();
    // A record per listed step; past the cap only changes are written.
    assert_eq!(records.len(), MAX_STEPS);
    let mut end = Vec::new();
    c.flush(&mut end);
    let inc = last_incident(&end);
    assert_eq!(inc.status, "closed");
    assert_eq!(inc.steps.len(), MAX_STEPS);
    assert_eq!(inc.steps_omitted, 200 - MAX_STEPS as u64);
    assert!(inc.keys.len() <= MAX_KEYS);
    assert!(!c.pending());
}

#[test]
fn repeats_fold_and_report_with_count() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    assert!(c.add(
        alert("key-file-open", 10, file_t(5), 70),
        S,
        &tree(&[10]),
        &mut out
    ));
    for i in 0..3 {
        assert!(!c.add(
            alert("key-file-open", 10, file_t(5), 70),
            (2 + i) * S,
            &tree(&[10]),
            &mut out
        ));
    }
    assert_eq!(alerts(&out).len(), 1);
    // The fold window (60 s) closes: one report with count 3.
    let mut later = Vec::new();
    c.tick(62 * S, &mut later);
    let rep = alerts(&later);
    assert_eq!(rep.len(), 1);
    assert_eq!(rep[0].count, 3);
    // The incident is still open; at its window's end it closes with
    // the step counting all four alerts.
    let mut end = Vec::new();
    c.tick(700 * S, &mut end);
    let inc = last_incident(&end);
    assert_eq!(inc.status, "closed");
    assert_eq!(inc.steps[0].count, 4);
    assert!(!c.pending());
}

#[test]
fn an_alert_standing_for_kernel_folded_repeats_counts_them_all() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    // The first record, and the next one after the kernel's fold window
    // (it stands for itself and 40 opens the kernel folded), then 7 more
    // the sweep found folded with nothing sent after them.
    assert!(c.add(
        alert("key-file-open", 10, file_t(5), 70),
        S,
        &tree(&[10]),
        &mut out
    ));
    let mut a = alert("key-file-open", 10, file_t(5), 70);
    a.count = 41;
    assert!(!c.add(a, 2 * S, &tree(&[10]), &mut out));
    let mut a = alert("key-file-open", 10, file_t(5), 70);
    a.count = 7;
    assert!(!c.add(a, 3 * S, &tree(&[10]), &mut out));
    assert_eq!(alerts(&out)[0].count, 1);
    let mut later = Vec::new();
    c.tick(62 * S, &mut later);
    assert_eq!(alerts(&later)[0].count, 48);
    let mut end = Vec::new();
    c.tick(700 * S, &mut end);
    assert_eq!(last_incident(&end).steps[0].count, 49);
    // A first alert that already stands for several events says so.
    let mut out = Vec::new();
    let mut a = alert("key-file-open", 11, file_t(6), 70);
    a.count = 5;
    assert!(c.add(a, 800 * S, &tree(&[11]), &mut out));
    assert_eq!(alerts(&out)[0].count, 5);
}

#[test]
fn another_operation_is_not_a_repeat() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    let mut a = alert("ptrace-attach", 10, proc_t(500), 80);
    a.message = "via PTRACE_ATTACH".into();
    let mut b = a.clone();
    b.message = "via PTRACE_PEEKDATA".into();
    assert!(c.add(a, S, &tree(&[10]), &mut out));
    assert!(c.add(b.clone(), 2 * S, &tree(&[10]), &mut out));
    assert!(!c.add(b, 3 * S, &tree(&[10]), &mut out));
    assert_eq!(alerts(&out).len(), 2);
}

#[test]
fn a_step_joining_two_incidents_merges_them() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    c.add(
        alert("ptrace-attach", 10, proc_t(500), 80),
        S,
        &tree(&[10]),
        &mut out,
    );
    c.add(
        alert("key-file-open", 20, file_t(5), 70),
        2 * S,
        &tree(&[20]),
        &mut out,
    );
    // Actor 10 opens the key file 20 opened: both incidents join.
    c.add(
        alert("key-file-open", 10, file_t(5), 70),
        3 * S,
        &tree(&[10]),
        &mut out,
    );
    let inc = last_incident(&out);
    assert_eq!(inc.merged.len(), 1);
    assert_eq!(inc.steps.len(), 3);
    assert_eq!(c.open_incidents(), 1);
}

#[test]
fn lineage_joins_copies() {
    let mut c = Correlator::new(Default::default(), ScoringConfig::default());
    let mut out = Vec::new();
    let mut a = alert("core-dump", 500, proc_t(500), 90);
    a.lineage = Some("dump-1".into());
    c.add(a, S, &tree(&[500]), &mut out);
    let mut b = alert("tracked-copy", 77, file_t(9), 60);
    b.lineage = Some("dump-1".into());
    c.add(b, 2 * S, &tree(&[77]), &mut out);
    let inc = last_incident(&out);
    assert_eq!(inc.steps.len(), 2);
    assert_eq!(inc.stages, vec!["dump", "copy"]);
    assert_eq!(inc.score, 100);
}
