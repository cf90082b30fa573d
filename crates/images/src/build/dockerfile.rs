//! Parser of the Dockerfile subset that image builds support.
//!
//! The subset: one `FROM`, then `RUN`, `COPY`, `ADD` (local sources only), `ENV`, `WORKDIR`,
//! `USER`, `ENTRYPOINT` and `CMD`. Lines end with `\` to continue on the next line, lines that
//! start with `#` are comments, and `RUN`, `ENTRYPOINT` and `CMD` take the JSON (exec) form or
//! the shell form. Any other instruction is a parse error that names its line, so a build
//! never silently skips a step the user asked for.

/// A parsed Dockerfile: the base image and the instructions after `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dockerfile {
    /// The image named by `FROM`.
    pub base: String,
    pub instructions: Vec<Instruction>,
}

/// One instruction after `FROM`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instruction {
    /// 1-based line number where the instruction starts.
    pub line: usize,
    /// The instruction as written, continuation lines joined with a space. It is part of the
    /// build cache key.
    pub text: String,
    pub kind: InstructionKind,
}

/// What an instruction does.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InstructionKind {
    Run(Command),
    /// `COPY` and `ADD` of files of the build context.
    Copy {
        sources: Vec<String>,
        destination: String,
        /// `--chown=USER[:GROUP]`, names or numbers.
        chown: Option<String>,
    },
    /// Variables in order of assignment; values are unquoted, variables not yet expanded.
    Env(Vec<(String, String)>),
    Workdir(String),
    User(String),
    Entrypoint(Command),
    Cmd(Command),
}

/// The argument of `RUN`, `ENTRYPOINT` and `CMD`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// JSON form: the program and its arguments, run without a shell.
    Exec(Vec<String>),
    /// Shell form: run with `/bin/sh -c`.
    Shell(String),
}

impl Command {
    /// The command's argv: the exec form as is, the shell form under `/bin/sh -c`.
    pub fn argv(&self) -> Vec<String> {
        match self {
            Command::Exec(argv) => argv.clone(),
            Command::Shell(script) => vec!["/bin/sh".into(), "-c".into(), script.clone()],
        }
    }
}

/// Why a Dockerfile cannot be built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("the Dockerfile has no FROM instruction; start it with FROM <image>")]
    MissingFrom,
    #[error("line {line}: {instruction} before FROM; the Dockerfile must start with FROM <image>")]
    BeforeFrom { line: usize, instruction: String },
    #[error(
        "line {line}: a second FROM; multi-stage builds are not supported, so use one FROM per Dockerfile"
    )]
    MultipleFrom { line: usize },
    #[error(
        "line {line}: instruction {instruction} is not supported; supported are FROM, RUN, COPY, ADD, ENV, WORKDIR, USER, ENTRYPOINT and CMD"
    )]
    Unsupported { line: usize, instruction: String },
    #[error("line {line}: {instruction} needs an argument")]
    MissingArgument { line: usize, instruction: String },
    #[error("line {line}: {message}")]
    Invalid { line: usize, message: String },
}

/// Parses `content` as a Dockerfile of the supported subset.
pub fn parse(content: &str) -> Result<Dockerfile, ParseError> {
    let mut base = None;
    let mut instructions = Vec::new();
    for (line, text) in logical_lines(content) {
        let (keyword, rest) = split_keyword(&text);
        let upper = keyword.to_ascii_uppercase();
        let rest = rest.trim();
        if rest.is_empty() {
            return Err(ParseError::MissingArgument {
                line,
                instruction: upper,
            });
        }
        if upper == "FROM" {
            if base.is_some() {
                return Err(ParseError::MultipleFrom { line });
            }
            base = Some(parse_from(line, rest)?);
            continue;
        }
        if base.is_none() {
            return Err(ParseError::BeforeFrom {
                line,
                instruction: upper,
            });
        }
        let kind = match upper.as_str() {
            "RUN" => InstructionKind::Run(parse_command(line, rest)?),
            "ENTRYPOINT" => InstructionKind::Entrypoint(parse_command(line, rest)?),
            "CMD" => InstructionKind::Cmd(parse_command(line, rest)?),
            "COPY" | "ADD" => parse_copy(line, &upper, rest)?,
            "ENV" => InstructionKind::Env(parse_env(line, rest)?),
            "WORKDIR" => InstructionKind::Workdir(single_word(line, "WORKDIR", rest)?),
            "USER" => InstructionKind::User(single_word(line, "USER", rest)?),
            _ => {
                return Err(ParseError::Unsupported {
                    line,
                    instruction: upper,
                });
            }
        };
        instructions.push(Instruction { line, text, kind });
    }
    Ok(Dockerfile {
        base: base.ok_or(ParseError::MissingFrom)?,
        instructions,
    })
}

/// Joins continuation lines and drops comments and blank lines; returns each instruction with
/// the number of the line it starts on.
fn logical_lines(content: &str) -> Vec<(usize, String)> {
    let mut lines = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (index, raw) in content.lines().enumerate() {
        let trimmed = raw.trim();
        // A comment or blank line inside a continuation is skipped, as Docker does.
        if trimmed.starts_with('#') || (trimmed.is_empty() && current.is_some()) {
            continue;
        }
        if trimmed.is_empty() {
            continue;
        }
        let (body, continues) = match trimmed.strip_suffix('\\') {
            Some(body) => (body.trim_end(), true),
            None => (trimmed, false),
        };
        let entry = current.get_or_insert_with(|| (index + 1, String::new()));
        if !entry.1.is_empty() && !body.is_empty() {
            entry.1.push(' ');
        }
        entry.1.push_str(body);
        if !continues {
            lines.extend(current.take());
        }
    }
    lines.extend(current.filter(|(_, text)| !text.is_empty()));
    lines
}

fn split_keyword(text: &str) -> (&str, &str) {
    match text.find(char::is_whitespace) {
        Some(at) => (&text[..at], &text[at..]),
        None => (text, ""),
    }
}

/// `FROM image [AS name]`; the stage name is accepted and ignored.
fn parse_from(line: usize, rest: &str) -> Result<String, ParseError> {
    let words: Vec<&str> = rest.split_whitespace().collect();
    match words.as_slice() {
        [image] => Ok((*image).to_owned()),
        [image, keyword, _] if keyword.eq_ignore_ascii_case("AS") => Ok((*image).to_owned()),
        _ if words.iter().any(|word| word.starts_with("--")) => Err(ParseError::Invalid {
            line,
            message: "FROM options such as --platform are not supported".into(),
        }),
        _ => Err(ParseError::Invalid {
            line,
            message: format!("expected FROM <image> [AS <name>], found FROM {rest}"),
        }),
    }
}

/// The exec form when the argument is a JSON array of strings, else the shell form.
fn parse_command(line: usize, rest: &str) -> Result<Command, ParseError> {
    if rest.starts_with('[')
        && let Ok(argv) = serde_json::from_str::<Vec<String>>(rest)
    {
        if argv.is_empty() {
            return Err(ParseError::Invalid {
                line,
                message: "the JSON form needs at least the program".into(),
            });
        }
        return Ok(Command::Exec(argv));
    }
    Ok(Command::Shell(rest.to_owned()))
}

fn parse_copy(line: usize, instruction: &str, rest: &str) -> Result<InstructionKind, ParseError> {
    let mut chown = None;
    let mut rest = rest;
    while let Some(option) = rest.strip_prefix("--") {
        let (word, after) = split_keyword(option);
        match word.split_once('=') {
            Some(("chown", value)) if !value.is_empty() => chown = Some(value.to_owned()),
            _ => {
                return Err(ParseError::Invalid {
                    line,
                    message: format!(
                        "{instruction} option --{word} is not supported; only --chown=USER[:GROUP] is"
                    ),
                });
            }
        }
        rest = after.trim_start();
    }

    let mut paths = match serde_json::from_str::<Vec<String>>(rest) {
        Ok(paths) if rest.starts_with('[') => paths,
        _ => words(line, rest)?,
    };
    if paths.len() < 2 {
        return Err(ParseError::Invalid {
            line,
            message: format!("{instruction} needs at least one source and a destination"),
        });
    }
    let destination = paths.pop().expect("at least two paths");
    for source in &paths {
        if source.contains("://") {
            return Err(ParseError::Invalid {
                line,
                message: format!(
                    "{instruction} source {source:?} is a URL; the build has no network, so only files of the build context can be added"
                ),
            });
        }
        if source.contains(['*', '?', '[']) {
            return Err(ParseError::Invalid {
                line,
                message: format!(
                    "{instruction} source {source:?} has a wildcard, which is not supported; name each file or directory"
                ),
            });
        }
    }
    Ok(InstructionKind::Copy {
        sources: paths,
        destination,
        chown,
    })
}

/// `ENV k=v [k2=v2 ...]` or the legacy `ENV k v...`, where the value is the rest of the line.
fn parse_env(line: usize, rest: &str) -> Result<Vec<(String, String)>, ParseError> {
    let (first, after) = split_keyword(rest);
    if !first.contains('=') {
        let value = words(line, after.trim())?.join(" ");
        check_env_name(line, first)?;
        return Ok(vec![(first.to_owned(), value)]);
    }
    let mut pairs = Vec::new();
    for word in words(line, rest)? {
        let Some((name, value)) = word.split_once('=') else {
            return Err(ParseError::Invalid {
                line,
                message: format!("expected NAME=value in ENV, found {word:?}"),
            });
        };
        check_env_name(line, name)?;
        pairs.push((name.to_owned(), value.to_owned()));
    }
    Ok(pairs)
}

fn check_env_name(line: usize, name: &str) -> Result<(), ParseError> {
    let valid = !name.is_empty()
        && !name.starts_with(|c: char| c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if valid {
        Ok(())
    } else {
        Err(ParseError::Invalid {
            line,
            message: format!(
                "invalid environment variable name {name:?}: use letters, digits and '_', not starting with a digit"
            ),
        })
    }
}

fn single_word(line: usize, instruction: &str, rest: &str) -> Result<String, ParseError> {
    let mut found = words(line, rest)?;
    if found.len() != 1 {
        return Err(ParseError::Invalid {
            line,
            message: format!("{instruction} takes one argument, found {}", found.len()),
        });
    }
    Ok(found.remove(0))
}

/// Splits `text` into words as Docker does for ENV, COPY, WORKDIR and USER: whitespace
/// separates words, single quotes keep everything literal, double quotes and backslashes
/// escape the next character. `$` references stay for the builder to expand.
fn words(line: usize, text: &str) -> Result<Vec<String>, ParseError> {
    let mut found = Vec::new();
    let mut current = String::new();
    let mut in_word = false;
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        match c {
            c if c.is_whitespace() => {
                if in_word {
                    found.push(std::mem::take(&mut current));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => current.push(c),
                        None => return Err(unterminated(line, '\'')),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some(c @ ('"' | '\\' | '$')) => current.push(c),
                            Some(c) => {
                                current.push('\\');
                                current.push(c);
                            }
                            None => return Err(unterminated(line, '"')),
                        },
                        Some(c) => current.push(c),
                        None => return Err(unterminated(line, '"')),
                    }
                }
            }
            '\\' => {
                in_word = true;
                if let Some(c) = chars.next() {
                    current.push(c);
                }
            }
            c => {
                in_word = true;
                current.push(c);
            }
        }
    }
    if in_word {
        found.push(current);
    }
    Ok(found)
}

fn unterminated(line: usize, quote: char) -> ParseError {
    ParseError::Invalid {
        line,
        message: format!("unterminated {quote} quote"),
    }
}

/// Expands `$NAME` and `${NAME}` in `text` from `env` (`NAME=value` entries); unknown names
/// expand to nothing, as in Docker.
pub fn expand(text: &str, env: &[String]) -> String {
    let lookup = |name: &str| {
        env.iter()
            .rev()
            .find_map(|entry| entry.strip_prefix(name)?.strip_prefix('='))
            .unwrap_or("")
            .to_owned()
    };
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find('$') {
        out.push_str(&rest[..at]);
        let after = &rest[at + 1..];
        if let Some(braced) = after.strip_prefix('{')
            && let Some(end) = braced.find('}')
        {
            out.push_str(&lookup(&braced[..end]));
            rest = &braced[end + 1..];
            continue;
        }
        let length = after
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(after.len());
        if length == 0 {
            out.push('$');
        } else {
            out.push_str(&lookup(&after[..length]));
        }
        rest = &after[length..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(content: &str) -> Vec<InstructionKind> {
        parse(content)
            .unwrap()
            .instructions
            .into_iter()
            .map(|instruction| instruction.kind)
            .collect()
    }

    #[test]
    fn sdk_image_parses() {
        // What `Image.base(...).run_commands(...).env(...).workdir(...)` and friends send.
        let content = "FROM daytona-default\nRUN echo hi > /x\nENV A='a b' B=plain\nWORKDIR /srv/app\n\
                       COPY [\"tmp/ctx/file.txt\", \"/opt/file.txt\"]\nENTRYPOINT [\"/bin/sleep\", \"60\"]\nCMD [\"infinity\"]\n";
        let parsed = parse(content).unwrap();
        assert_eq!(parsed.base, "daytona-default");
        assert_eq!(
            parsed
                .instructions
                .iter()
                .map(|i| i.line)
                .collect::<Vec<_>>(),
            [2, 3, 4, 5, 6, 7]
        );
        let kinds: Vec<_> = parsed.instructions.into_iter().map(|i| i.kind).collect();
        assert_eq!(
            kinds,
            [
                InstructionKind::Run(Command::Shell("echo hi > /x".into())),
                InstructionKind::Env(vec![
                    ("A".into(), "a b".into()),
                    ("B".into(), "plain".into())
                ]),
                InstructionKind::Workdir("/srv/app".into()),
                InstructionKind::Copy {
                    sources: vec!["tmp/ctx/file.txt".into()],
                    destination: "/opt/file.txt".into(),
                    chown: None
                },
                InstructionKind::Entrypoint(Command::Exec(vec!["/bin/sleep".into(), "60".into()])),
                InstructionKind::Cmd(Command::Exec(vec!["infinity".into()])),
            ]
        );
    }

    #[test]
    fn continuations_and_comments() {
        let content = "# a comment\nFROM base AS build\nRUN apt-get update && \\\n    # inside\n    apt-get install -y x\n\n";
        let parsed = parse(content).unwrap();
        assert_eq!(parsed.base, "base");
        assert_eq!(parsed.instructions.len(), 1);
        assert_eq!(parsed.instructions[0].line, 3);
        assert_eq!(
            parsed.instructions[0].kind,
            InstructionKind::Run(Command::Shell(
                "apt-get update && apt-get install -y x".into()
            ))
        );
    }

    #[test]
    fn env_forms() {
        assert_eq!(
            kinds("FROM b\nENV NAME some value\n"),
            [InstructionKind::Env(vec![(
                "NAME".into(),
                "some value".into()
            )])]
        );
        assert_eq!(
            kinds("FROM b\nENV A=\"x \\\"y\\\"\" B=a\\ b\n"),
            [InstructionKind::Env(vec![
                ("A".into(), "x \"y\"".into()),
                ("B".into(), "a b".into())
            ])]
        );
        assert!(matches!(
            parse("FROM b\nENV 1A=x\n"),
            Err(ParseError::Invalid { line: 2, .. })
        ));
        assert!(matches!(
            parse("FROM b\nENV A='x\n"),
            Err(ParseError::Invalid { line: 2, .. })
        ));
    }

    #[test]
    fn copy_forms() {
        assert_eq!(
            kinds("FROM b\nCOPY --chown=1000:1000 a b /dest/\nADD [\"c d\", \"/e\"]\n"),
            [
                InstructionKind::Copy {
                    sources: vec!["a".into(), "b".into()],
                    destination: "/dest/".into(),
                    chown: Some("1000:1000".into())
                },
                InstructionKind::Copy {
                    sources: vec!["c d".into()],
                    destination: "/e".into(),
                    chown: None
                },
            ]
        );
        for bad in [
            "COPY --from=builder a b",
            "COPY onlyone",
            "ADD https://example.com/x /x",
            "COPY *.txt /x/",
        ] {
            let error = parse(&format!("FROM b\n{bad}\n")).unwrap_err();
            assert!(
                matches!(error, ParseError::Invalid { line: 2, .. }),
                "{bad}: {error}"
            );
        }
    }

    #[test]
    fn command_forms() {
        assert_eq!(
            kinds("FROM b\nRUN [\"/bin/echo\", \"a\"]\nCMD [not json\n"),
            [
                InstructionKind::Run(Command::Exec(vec!["/bin/echo".into(), "a".into()])),
                InstructionKind::Cmd(Command::Shell("[not json".into())),
            ]
        );
        assert_eq!(
            Command::Shell("echo $A".into()).argv(),
            ["/bin/sh", "-c", "echo $A"]
        );
    }

    #[test]
    fn errors_name_the_line() {
        let cases = [
            ("", ParseError::MissingFrom),
            (
                "RUN x\nFROM b\n",
                ParseError::BeforeFrom {
                    line: 1,
                    instruction: "RUN".into(),
                },
            ),
            ("FROM a\nFROM b\n", ParseError::MultipleFrom { line: 2 }),
            (
                "FROM a\n\nEXPOSE 80\n",
                ParseError::Unsupported {
                    line: 3,
                    instruction: "EXPOSE".into(),
                },
            ),
            (
                "FROM a\nRUN\n",
                ParseError::MissingArgument {
                    line: 2,
                    instruction: "RUN".into(),
                },
            ),
        ];
        for (content, expected) in cases {
            assert_eq!(parse(content).unwrap_err(), expected, "{content:?}");
        }
        let message = parse("FROM a\nHEALTHCHECK CMD x\n")
            .unwrap_err()
            .to_string();
        assert!(
            message.starts_with("line 2: instruction HEALTHCHECK"),
            "{message}"
        );
    }

    #[test]
    fn expand_variables() {
        let env = vec!["HOME=/root".to_owned(), "A=1".to_owned()];
        assert_eq!(expand("$HOME/x", &env), "/root/x");
        assert_eq!(expand("${A}b$MISSING.$", &env), "1b.$");
    }
}
