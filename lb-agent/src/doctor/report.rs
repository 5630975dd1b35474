//! What a check reports (a [`Finding`] with its [`Verdict`]) and how the report is printed.

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    Warn,
    Fail,
}

impl Verdict {
    fn label(self) -> &'static str {
        match self {
            Verdict::Ok => "OK",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
        }
    }
}

impl std::fmt::Display for Verdict {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

#[derive(Clone, Debug)]
pub struct Finding {
    pub verdict: Verdict,
    /// What was checked ("bpffs", "native XDP on eth0", ...).
    pub check: String,
    pub detail: String,
    /// What to do about it (None when OK).
    pub fix: Option<String>,
}

impl Finding {
    pub(super) fn ok(check: impl Into<String>, detail: impl Into<String>) -> Self {
        Self {
            verdict: Verdict::Ok,
            check: check.into(),
            detail: detail.into(),
            fix: None,
        }
    }

    pub(super) fn warn(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Warn,
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }

    pub(super) fn fail(
        check: impl Into<String>,
        detail: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Self {
            verdict: Verdict::Fail,
            check: check.into(),
            detail: detail.into(),
            fix: Some(fix.into()),
        }
    }
}

/// One line per finding: `OK   check: detail`, and under a finding that is not OK,
/// `     fix: ...`.
pub fn render(findings: &[Finding]) -> String {
    const INDENT: &str = "     ";
    let mut s = String::new();
    for f in findings {
        let detail = f.detail.replace('\n', &format!("\n{INDENT}"));
        s.push_str(&format!(
            "{:<4} {}: {}\n",
            f.verdict.label(),
            f.check,
            detail
        ));
        if f.verdict != Verdict::Ok {
            if let Some(fix) = &f.fix {
                let fix = fix.replace('\n', &format!("\n{INDENT}     "));
                s.push_str(&format!("{INDENT}fix: {fix}\n"));
            }
        }
    }
    s
}

/// Whether any check FAILed.
pub fn failed(findings: &[Finding]) -> bool {
    findings.iter().any(|f| f.verdict == Verdict::Fail)
}
