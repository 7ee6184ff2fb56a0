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

/// Environment-style names (`PGPASSWORD`, `MYSQL_PWD`,
/// `AWS_SECRET_ACCESS_KEY`, `GITHUB_TOKEN`): upper case, digits and `_`,
/// ending in one of these, with or without a separator.
const ENV_SECRET_SUFFIXES: [&str; 9] = [
    "PASSWORD",
    "PASSWD",
    "PASS",
    "PWD",
    "SECRET",
    "TOKEN",
    "KEY",
    "CREDENTIALS",
    "PASSPHRASE",
];

fn is_env_secret_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_')
        && ENV_SECRET_SUFFIXES.iter().any(|w| name.ends_with(w))
}

/// URL query parameters whose value is a credential.
const SECRET_PARAMS: [&str; 12] = [
    "token",
    "access_token",
    "refresh_token",
    "id_token",
    "api_key",
    "apikey",
    "key",
    "secret",
    "password",
    "sig",
    "signature",
    "x-amz-signature",
];

/// HTTP headers whose value is a credential (`curl -H`).
fn is_secret_header(name: &str) -> bool {
    let n = name.trim().to_ascii_lowercase();
    n == "authorization"
        || n == "proxy-authorization"
        || n == "cookie"
        || n.ends_with("token")
        || n.ends_with("api-key")
        || n.ends_with("secret")
}

/// MySQL/MariaDB clients take the password glued to `-p`.
const MYSQL_CLIENTS: [&str; 8] = [
    "mysql",
    "mysqldump",
    "mysqladmin",
    "mysqlimport",
    "mysqlshow",
    "mariadb",
    "mariadb-dump",
    "mariadb-admin",
];

fn program(argv: &[String]) -> &str {
    argv.first()
        .map(|a| a.rsplit('/').next().unwrap_or(a))
        .unwrap_or("")
}

/// Redacts values of secret-looking options (`--password x`,
/// `--token=x`, `PASSWORD=x`, `PGPASSWORD=x`), `-passin pass:x` style
/// OpenSSL arguments, credentials in URLs (`https://user:pw@host`,
/// `?token=x`), secret HTTP headers (`Authorization: Bearer x`), curl's
/// `-u user:pass`, MySQL's `-pSECRET`, and the positional secrets of
/// `vault login TOKEN` and `vault operator unseal KEY`.
///
/// Idempotent by construction: the pass is repeated until it changes
/// nothing (a redaction can expose another one: a URL's user info removed
/// leaves a positional argument), so a recording's redacted command line
/// redacts to itself in a replay.
pub fn redact_argv(argv: &[String]) -> Vec<String> {
    let mut cur = redact_pass(argv);
    if CmdlineMode::current() == CmdlineMode::ProgramAndFiles {
        cur = program_and_files(&cur);
    }
    for _ in 0..8 {
        let next = redact_pass(&cur);
        if next == cur {
            break;
        }
        cur = next;
    }
    cur
}

fn redact_pass(argv: &[String]) -> Vec<String> {
    let prog = program(argv);
    let mysql = MYSQL_CLIENTS.contains(&prog);
    let curl = prog == "curl";
    // vault login TOKEN, vault unseal KEY, vault operator unseal KEY.
    let vault_positional = prog == "vault"
        && (argv.get(1).is_some_and(|a| a == "login" || a == "unseal")
            || (argv.get(1).is_some_and(|a| a == "operator")
                && argv.get(2).is_some_and(|a| a == "unseal")));
    let mut out = Vec::with_capacity(argv.len());
    let mut redact_next = false;
    let mut user_next = false;
    for (i, arg) in argv.iter().enumerate() {
        if redact_next {
            out.push(MARK.to_string());
            redact_next = false;
            continue;
        }
        if user_next {
            out.push(redact_userpass(arg));
            user_next = false;
            continue;
        }
        if let Some((name, _)) = arg.split_once('=')
            && (is_secret_name(name) || is_env_secret_name(name))
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
        if mysql && arg.starts_with("-p") && arg.len() > 2 && !arg.starts_with("--") {
            out.push(format!("-p{MARK}"));
            continue;
        }
        if curl && (arg == "-u" || arg == "--user" || arg == "-U" || arg == "--proxy-user") {
            out.push(arg.clone());
            user_next = true;
            continue;
        }
        if curl && let Some(v) = arg.strip_prefix("-u").filter(|v| !v.is_empty()) {
            out.push(format!("-u{}", redact_userpass(v)));
            continue;
        }
        if let Some((name, _)) = arg.split_once(':')
            && !name.contains('/')
            && !name.contains(' ')
            && is_secret_header(name)
        {
            out.push(format!("{name}: {MARK}"));
            continue;
        }
        // The positional rule looks at the argument as redacted above, so
        // a second pass decides the same (redaction is idempotent).
        let red = redact_bearer(&redact_url(arg));
        if vault_positional
            && i >= 2
            && !red.starts_with('-')
            && !red.contains('=')
            && red != "unseal"
        {
            out.push(MARK.to_string());
        } else {
            out.push(red);
        }
    }
    out
}

/// `user:pass` -> `user:[REDACTED]` (a bare user is kept).
fn redact_userpass(v: &str) -> String {
    match v.split_once(':') {
        Some((user, _)) => format!("{user}:{MARK}"),
        None => v.to_string(),
    }
}

/// `Bearer xyz` anywhere in an argument.
fn redact_bearer(arg: &str) -> String {
    let lower = arg.to_ascii_lowercase();
    match lower.find("bearer ") {
        Some(i) => format!("{}{MARK}", &arg[..i + "bearer ".len()]),
        None => arg.to_string(),
    }
}

fn redact_url(arg: &str) -> String {
    let Some(scheme_end) = arg.find("://") else {
        return arg.to_string();
    };
    let mut arg = arg.to_string();
    let rest = &arg[scheme_end + 3..];
    let host_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    if let Some(at) = rest[..host_end].rfind('@')
        && let Some(colon) = rest[..at].find(':')
    {
        arg = format!(
            "{}{}:{MARK}{}",
            &arg[..scheme_end + 3],
            &rest[..colon],
            &rest[at..]
        );
    }
    // Credentials in the query: ?token=x&key=y.
    let Some(q) = arg.find('?') else {
        return arg;
    };
    let (base, query) = arg.split_at(q + 1);
    let (query, frag) = match query.find('#') {
        Some(h) => query.split_at(h),
        None => (query, ""),
    };
    let params: Vec<String> = query
        .split('&')
        .map(|p| match p.split_once('=') {
            Some((k, _)) if SECRET_PARAMS.iter().any(|s| k.eq_ignore_ascii_case(s)) => {
                format!("{k}={MARK}")
            }
            _ => p.to_string(),
        })
        .collect();
    format!("{base}{}{frag}", params.join("&"))
}

/// How much of a command line leaves the sensor (`[alerts] cmdline`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CmdlineMode {
    /// Every argument, secrets redacted.
    Redacted,
    /// The program and the arguments that are paths; the rest omitted.
    ProgramAndFiles,
}

static PROGRAM_AND_FILES: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

impl CmdlineMode {
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "redacted" => Some(Self::Redacted),
            "program-and-files" => Some(Self::ProgramAndFiles),
            _ => None,
        }
    }

    /// The mode every command line is rendered in from now on (start,
    /// reload, replay).
    pub fn set(self) {
        PROGRAM_AND_FILES.store(
            self == Self::ProgramAndFiles,
            std::sync::atomic::Ordering::Relaxed,
        );
    }

    pub fn current() -> Self {
        if PROGRAM_AND_FILES.load(std::sync::atomic::Ordering::Relaxed) {
            Self::ProgramAndFiles
        } else {
            Self::Redacted
        }
    }
}

const OMITTED: &str = "[omitted]";

/// A path argument: absolute, relative with `./`/`../`, or home-relative.
fn is_path(a: &str) -> bool {
    a.starts_with('/') || a.starts_with("./") || a.starts_with("../") || a.starts_with("~/")
}

/// The program and its path arguments (an option's path value too:
/// `--out=/tmp/x`); every other argument becomes `[omitted]`.
fn program_and_files(argv: &[String]) -> Vec<String> {
    argv.iter()
        .enumerate()
        .map(|(i, a)| {
            if i == 0 || is_path(a) || a == OMITTED {
                return a.clone();
            }
            match a.split_once('=') {
                Some((name, v)) if name.starts_with('-') && is_path(v) => a.clone(),
                _ => OMITTED.to_string(),
            }
        })
        .collect()
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
    fn program_and_files_keeps_only_those() {
        let v = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let out = program_and_files(&v(&[
            "/usr/bin/openssl",
            "pkcs12",
            "-passin",
            "pass:hunter2",
            "-in",
            "/etc/ssl/private/ca.p12",
            "--out=./ca.pem",
            "--tag=x",
        ]));
        assert_eq!(
            out,
            v(&[
                "/usr/bin/openssl",
                "[omitted]",
                "[omitted]",
                "[omitted]",
                "[omitted]",
                "/etc/ssl/private/ca.p12",
                "--out=./ca.pem",
                "[omitted]",
            ])
        );
        assert_eq!(program_and_files(&out), out, "idempotent");
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

    #[test]
    fn redacts_the_forms_of_issue_14() {
        // Environment-style names, with or without a separator.
        assert_eq!(
            r(&[
                "env",
                "PGPASSWORD=a",
                "MYSQL_PWD=b",
                "AWS_SECRET_ACCESS_KEY=c",
                "GITHUB_TOKEN=d",
                "X_CREDENTIALS=e",
                "HOME=/root"
            ]),
            "env PGPASSWORD=[REDACTED] MYSQL_PWD=[REDACTED] AWS_SECRET_ACCESS_KEY=[REDACTED] GITHUB_TOKEN=[REDACTED] X_CREDENTIALS=[REDACTED] HOME=/root"
        );
        // MySQL's glued password; not other programs' -p flags.
        assert_eq!(
            r(&["mysql", "-uroot", "-phunter2", "db"]),
            "mysql -uroot -p[REDACTED] db"
        );
        assert_eq!(
            r(&["/usr/bin/mysqldump", "-phunter2"]),
            "/usr/bin/mysqldump -p[REDACTED]"
        );
        assert_eq!(r(&["ls", "-pla"]), "ls -pla");
        assert_eq!(r(&["mysql", "--port=3306"]), "mysql --port=3306");
        // curl: -u user:pass, glued or not; headers; bearer tokens.
        assert_eq!(
            r(&["curl", "-u", "bob:pw", "https://h"]),
            "curl -u bob:[REDACTED] https://h"
        );
        assert_eq!(
            r(&["curl", "-ubob:pw", "https://h"]),
            "curl -ubob:[REDACTED] https://h"
        );
        assert_eq!(
            r(&["curl", "-u", "bob", "https://h"]),
            "curl -u bob https://h"
        );
        assert_eq!(
            r(&[
                "curl",
                "-H",
                "Authorization: Bearer abc.def",
                "-H",
                "X-Vault-Token: s.x",
                "-H",
                "Accept: json"
            ]),
            "curl -H Authorization: [REDACTED] -H X-Vault-Token: [REDACTED] -H Accept: json"
        );
        assert_eq!(
            r(&["x", "--header=Bearer abc"]),
            "x --header=Bearer [REDACTED]"
        );
        // URLs: user info and credential query parameters.
        assert_eq!(
            r(&[
                "curl",
                "https://h/p?token=abc&page=2&X-Amz-Signature=s#frag"
            ]),
            "curl https://h/p?token=[REDACTED]&page=2&X-Amz-Signature=[REDACTED]#frag"
        );
        assert_eq!(
            r(&["git", "clone", "https://bob:pw@h/r.git"]),
            "git clone https://bob:[REDACTED]@h/r.git"
        );
        // Vault's positional secrets.
        assert_eq!(r(&["vault", "login", "s.abc"]), "vault login [REDACTED]");
        assert_eq!(
            r(&[
                "vault",
                "login",
                "-method=userpass",
                "username=bob",
                "password=pw"
            ]),
            "vault login -method=userpass username=bob password=[REDACTED]"
        );
        assert_eq!(
            r(&["vault", "operator", "unseal", "KEYSHARE"]),
            "vault operator unseal [REDACTED]"
        );
        assert_eq!(r(&["vault", "read", "secret/x"]), "vault read secret/x");
        // File arguments stay (they are what an alert is about).
        assert_eq!(
            r(&["openssl", "req", "-key", "/etc/ssl/private/ca.key"]),
            "openssl req -key /etc/ssl/private/ca.key"
        );
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
            &["curl", "-u", "bob:pw", "-H", "Authorization: Bearer abc"],
            &["mysql", "-pSECRET", "-u", "root"],
            &["vault", "operator", "unseal", "KEYSHARE"],
            &["env", "PGPASSWORD=x", "AWS_SECRET_ACCESS_KEY=y"],
            &["curl", "https://h/x?token=abc&page=2#f"],
        ] {
            let v: Vec<String> = v.iter().map(|s| s.to_string()).collect();
            let once = redact_argv(&v);
            assert_eq!(redact_argv(&once), once);
        }
    }
}
