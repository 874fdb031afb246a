//! What the probe found, and its two renderings: lines for people, one JSON object for
//! machines (`--json`).

use super::diagnosis::Diagnosis;
use serde::Serialize;
use std::fmt::Write;

/// One step: its name (stable, snake_case), whether it worked, how long it took and what it
/// found.
#[derive(Clone, Debug, Serialize)]
pub struct Step {
    pub name: &'static str,
    pub ok: bool,
    pub ms: f64,
    pub detail: String,
}

/// Payloads sent and echoed back through the two allocations, per framing.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Echo {
    pub sent: u32,
    pub received: u32,
    /// Round-trip times of the payloads that came back, milliseconds.
    pub rtt_ms: Vec<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct DiagnosisJson {
    pub code: &'static str,
    pub message: String,
}

impl From<&Diagnosis> for DiagnosisJson {
    fn from(d: &Diagnosis) -> Self {
        DiagnosisJson {
            code: d.code,
            message: d.message.clone(),
        }
    }
}

/// The whole result.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Report {
    pub url: String,
    pub transport: &'static str,
    pub server: Option<String>,
    pub software: Option<String>,
    pub realm: Option<String>,
    pub reflexive: Option<String>,
    pub relay: Option<String>,
    pub peer_relay: Option<String>,
    pub steps: Vec<Step>,
    pub send_data: Echo,
    pub channel_data: Echo,
    pub warnings: Vec<DiagnosisJson>,
    pub diagnosis: Option<DiagnosisJson>,
    /// True only if data went out through the relay and came back.
    pub success: bool,
}

impl Report {
    pub fn to_json(&self) -> String {
        // Invariant: the report holds only strings, numbers, bools and vectors of them, which
        // serde_json always serialises.
        serde_json::to_string(self).expect("report serialises")
    }

    pub fn to_text(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "probing {}", self.url);
        for s in &self.steps {
            let _ = writeln!(
                o,
                "  {:4} {:<22} {:>9.1} ms  {}",
                if s.ok { "ok" } else { "FAIL" },
                s.name,
                s.ms,
                s.detail
            );
        }
        for (label, v) in [
            ("server", &self.server),
            ("software", &self.software),
            ("realm", &self.realm),
            ("reflexive address", &self.reflexive),
            ("relayed address", &self.relay),
            ("peer relayed address", &self.peer_relay),
        ] {
            if let Some(v) = v {
                let _ = writeln!(o, "{label:>21}: {v}");
            }
        }
        for (label, e) in [
            ("Send/Data", &self.send_data),
            ("ChannelData", &self.channel_data),
        ] {
            if e.sent > 0 {
                let _ = writeln!(
                    o,
                    "{label:>21}: {}/{} echoed{}",
                    e.received,
                    e.sent,
                    summary(&e.rtt_ms)
                );
            }
        }
        for w in &self.warnings {
            let _ = writeln!(o, "warning [{}]: {}", w.code, w.message);
        }
        match (&self.diagnosis, self.success) {
            (Some(d), _) => {
                let _ = writeln!(o, "FAILED [{}]: {}", d.code, d.message);
            }
            (None, true) => {
                let _ = writeln!(o, "OK: data went through the relay and came back");
            }
            (None, false) => {
                let _ = writeln!(o, "FAILED");
            }
        }
        o
    }
}

/// Milliseconds, to the microsecond (finer digits are noise, and clutter the JSON).
pub fn millis(d: std::time::Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

fn summary(rtt: &[f64]) -> String {
    if rtt.is_empty() {
        return String::new();
    }
    let min = rtt.iter().cloned().fold(f64::INFINITY, f64::min);
    let max = rtt.iter().cloned().fold(0.0, f64::max);
    let avg = rtt.iter().sum::<f64>() / rtt.len() as f64;
    format!(", rtt min/avg/max {min:.2}/{avg:.2}/{max:.2} ms")
}
