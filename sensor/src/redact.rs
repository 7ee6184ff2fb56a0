//! Redaction of secrets in command lines before they leave the sensor.

const SECRET_WORDS: [&str; 9] = [
    "password",
    "passwd",
    "pass",
    "secret",
    "token",
    "apikey",
    "api-key",
    "api_key",
    "passphrase",
];
const MARK: &str = "[REDACTED]";

/// `password`, `--db-password`, `API_TOKEN`...: a secret word, alone or
/// after `-`/`_`, in any case. No allocation (runs per argument per alert).
fn is_secret_name(name: &str) -> bool {
    let n = name.trim_start_matches('-').as_bytes();
    SECRET_WORDS.iter().any(|w| {
        let w = w.as_bytes();
        n.len() >= w.len()
            && n[n.len() - w.len()..].eq_ignore_ascii_case(w)
            && (n.len() == w.len() || matches!(n[n.len() - w.len() - 1], b'-' | b'_'))
    })
}

/// Redacts values of secret-looking options (`--password x`,
/// `--token=x`, `PASSWORD=x`), `-passin pass:x` style OpenSSL arguments and
/// credentials in URLs (`https://user:pw@host`).
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut out = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    for arg in argv {
        if redact_next {
            out.push(MARK.to_string());
            redact_next = false;
            continue;
        }
        if let Some((name, _)) = arg.split_once('=')
            && is_secret_name(name)
        {
            out.push(format!("{name}={MARK}"));
            continue;
        }
        if arg.starts_with('-') && is_secret_name(arg) {
            out.push(arg.clone());
            redact_next = true;
            continue;
        }
        // OpenSSL: -passin pass:secret / -passout pass:secret / env:VAR is fine.
        if arg.starts_with("pass:") {
            out.push(format!("pass:{MARK}"));
            continue;
        }
        out.push(redact_url(arg));
    }
    out
}

fn redact_url(arg: &str) -> String {
    if let Some(scheme_end) = arg.find("://") {
        let rest = &arg[scheme_end + 3..];
        let host_end = rest.find('/').unwrap_or(rest.len());
        if let Some(at) = rest[..host_end].rfind('@')
            && let Some(colon) = rest[..at].find(':')
        {
            return format!(
                "{}{}:{MARK}{}",
                &arg[..scheme_end + 3],
                &rest[..colon],
                &rest[at..]
            );
        }
    }
    arg.to_string()
}

/// The command line as one string, redacted.
pub fn cmdline(argv: &[String]) -> String {
    redact_argv(argv).join(" ")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(v: &[&str]) -> String {
        cmdline(&v.iter().map(|s| s.to_string()).collect::<Vec<_>>())
    }

    #[test]
    fn redacts() {
        assert_eq!(
            r(&["vault", "login", "--token", "s.abc"]),
            "vault login --token [REDACTED]"
        );
        assert_eq!(r(&["x", "--password=hunter2"]), "x --password=[REDACTED]");
        assert_eq!(
            r(&["env", "DB_PASSWORD=hunter2", "x"]),
            "env DB_PASSWORD=[REDACTED] x"
        );
        assert_eq!(
            r(&["openssl", "pkcs12", "-passin", "pass:hunter2"]),
            "openssl pkcs12 -passin pass:[REDACTED]"
        );
        assert_eq!(
            r(&["openssl", "rsa", "-passout", "pass:x"]),
            "openssl rsa -passout pass:[REDACTED]"
        );
        assert_eq!(
            r(&["curl", "https://bob:hunter2@example.org/x"]),
            "curl https://bob:[REDACTED]@example.org/x"
        );
        assert_eq!(
            r(&["cat", "/etc/ssl/private/a.key"]),
            "cat /etc/ssl/private/a.key"
        );
        assert_eq!(r(&["ls", "-p"]), "ls -p");
    }

    /// Recordings keep redacted argv; redacting again changes nothing, so
    /// a replay prints the command lines the live run printed.
    #[test]
    fn redaction_is_idempotent() {
        for v in [
            &["vault", "login", "--token", "s.abc"][..],
            &["x", "--password=hunter2", "DB_PASSWORD=y"],
            &["openssl", "pkcs12", "-passin", "pass:hunter2"],
            &["curl", "https://bob:hunter2@example.org/x"],
        ] {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            let once = redact_argv(&v);
            assert_eq!(redact_argv(&once), once);
        }
    }
}
