//! Every read of the live system a rule's decision depends on (/proc,
//! sysctls, a file's first bytes, whether an inode still exists) goes
//! through `SystemView`: live, it reads now and, when recording, keeps the
//! answer as a fact for the recording; in a replay it answers from the
//! recording's facts and never touches the system. A decision made on a
//! fact is therefore the same live and in replay.

use std::collections::HashMap;

use serde_json::Value;

use crate::enrich::coredump;

#[derive(Default)]
pub struct SystemView {
    /// Replay: the facts of the recording (None when live).
    recorded: Option<HashMap<String, Value>>,
    /// Live and recording: facts read for the event being handled, written
    /// to the recording before its record.
    new: Vec<(String, Value)>,
    recording: bool,
}

impl SystemView {
    /// Answer from a recording from now on.
    pub fn replaying(&mut self) {
        self.recorded.get_or_insert_with(HashMap::new);
    }

    pub fn is_replay(&self) -> bool {
        self.recorded.is_some()
    }

    /// Keep what is read for a recording (or stop keeping it).
    pub fn set_recording(&mut self, on: bool) {
        self.recording = on;
        if !on {
            self.new.clear();
        }
    }

    /// A fact of the recording being replayed.
    pub fn insert_recorded(&mut self, key: String, value: Value) {
        self.recorded
            .get_or_insert_with(HashMap::new)
            .insert(key, value);
    }

    /// The facts read since the last call, to record.
    pub fn take_new(&mut self) -> std::vec::Drain<'_, (String, Value)> {
        self.new.drain(..)
    }

    /// A value read from the system now (`live`), or from the recording
    /// when replaying (Null when it has none).
    pub fn value(&mut self, key: String, live: impl FnOnce() -> Value) -> Value {
        if let Some(f) = &self.recorded {
            return f.get(&key).cloned().unwrap_or_default();
        }
        let v = live();
        if self.recording {
            self.new.push((key, v.clone()));
        }
        v
    }

    /// A read repeated until it finds something (a poll each tick): only
    /// what it finds (not Null) is recorded; a replay answers that, else
    /// Null.
    pub fn found(&mut self, key: String, live: impl FnOnce() -> Value) -> Value {
        if let Some(f) = &self.recorded {
            return f.get(&key).cloned().unwrap_or_default();
        }
        let v = live();
        if self.recording && !v.is_null() {
            self.new.push((key, v.clone()));
        }
        v
    }

    /// A yes/no read from the system now, or from the recording.
    pub fn flag(&mut self, key: String, live: impl FnOnce() -> bool) -> bool {
        self.value(key, || Value::Bool(live()))
            .as_bool()
            .unwrap_or(false)
    }

    /// The kernel's core_pattern and core_uses_pid.
    pub fn core_pattern(&mut self) -> (String, bool) {
        let v = self.value("core_pattern".into(), || {
            serde_json::to_value(coredump::current_pattern()).unwrap_or_default()
        });
        serde_json::from_value(v).unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn live_reads_are_kept_only_when_recording() {
        let mut v = SystemView::default();
        assert_eq!(v.value("a".into(), || 1.into()), Value::from(1));
        assert_eq!(v.take_new().count(), 0);
        v.set_recording(true);
        assert!(v.flag("b".into(), || true));
        assert_eq!(
            v.take_new().collect::<Vec<_>>(),
            vec![("b".into(), Value::Bool(true))]
        );
    }

    #[test]
    fn a_replay_answers_from_the_recording_and_never_reads() {
        let mut v = SystemView::default();
        v.replaying();
        v.insert_recorded("b".into(), Value::Bool(true));
        assert!(v.is_replay());
        assert!(v.flag("b".into(), || panic!("read the live system")));
        assert_eq!(v.value("missing".into(), || panic!("read")), Value::Null);
        assert_eq!(v.core_pattern(), (String::new(), false));
    }
}
