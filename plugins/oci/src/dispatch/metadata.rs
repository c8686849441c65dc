//! The instructions that change only the image config, not its files: one
//! small function each, over the stage.

use std::collections::BTreeMap;

use super::Stage;
use crate::{
    dockerfile::{self, Args},
    fs::tree::clean,
};

/// `CMD`/`ENTRYPOINT` arguments: the exec form as given, the shell form
/// run by the stage's `SHELL`.
fn shell_or_exec(args: &Args, shell: &[String]) -> Vec<String> {
    match args {
        Args::Exec(list) => list.clone(),
        Args::Shell(text) => {
            let mut v = shell.to_vec();
            v.push(text.clone());
            v
        }
    }
}

/// `ENV`: each pair (`text` as written, read with `vars`) becomes a
/// variable and a config `Env` entry (replacing one of the same name in
/// place).
pub(super) fn env(
    stage: &mut Stage,
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(), String> {
    for (k, v) in dockerfile::pairs(text, vars, escape, true)? {
        stage.vars.insert(k.clone(), v.clone());
        let key = format!("{k}=");
        match stage.runtime.env.iter_mut().find(|e| e.starts_with(&key)) {
            Some(e) => *e = format!("{k}={v}"),
            None => stage.runtime.env.push(format!("{k}={v}")),
        }
    }
    Ok(())
}

/// `LABEL`: each pair (`text` as written, read with `vars`) a label.
pub(super) fn label(
    stage: &mut Stage,
    text: &str,
    vars: &BTreeMap<String, String>,
    escape: char,
) -> Result<(), String> {
    for (k, v) in dockerfile::pairs(text, vars, escape, false)? {
        stage.runtime.labels.insert(k, v);
    }
    Ok(())
}

/// `WORKDIR`: absolute, or relative to the current one; cleaned.
pub(super) fn workdir(stage: &mut Stage, dir: &str) {
    let base = stage
        .runtime
        .working_dir
        .clone()
        .unwrap_or_else(|| "/".into());
    let joined = if dir.starts_with('/') {
        dir.to_string()
    } else {
        format!("{}/{dir}", base.trim_end_matches('/'))
    };
    stage.runtime.working_dir = Some(format!("/{}", clean(&joined)));
}

/// `EXPOSE`: `PORT[-PORT][/PROTO]` each, the protocol `tcp` by default.
pub(super) fn expose(stage: &mut Stage, text: &str) -> Result<(), String> {
    for port in text.split_whitespace() {
        let (number, proto) = port.split_once('/').unwrap_or((port, "tcp"));
        let valid = !number.is_empty() && number.split('-').all(|n| n.parse::<u16>().is_ok());
        if !valid {
            return Err(format!("EXPOSE {port}: invalid port"));
        }
        stage
            .runtime
            .exposed_ports
            .insert(format!("{number}/{}", proto.to_lowercase()));
    }
    Ok(())
}

/// `VOLUME`: none may be empty.
pub(super) fn volume(stage: &mut Stage, list: Vec<String>) -> Result<(), String> {
    if list.iter().any(|v| v.trim().is_empty()) {
        return Err("VOLUME specified can not be an empty string".into());
    }
    stage.runtime.volumes.extend(list);
    Ok(())
}

/// `CMD`.
pub(super) fn cmd(stage: &mut Stage, args: &Args) {
    stage.runtime.cmd = Some(shell_or_exec(args, &stage.shell));
    stage.cmd_set = true;
}

/// `ENTRYPOINT`; Docker drops an inherited `CMD` when it is set.
pub(super) fn entrypoint(stage: &mut Stage, args: &Args) {
    stage.runtime.entrypoint = Some(shell_or_exec(args, &stage.shell));
    if !stage.cmd_set {
        stage.runtime.cmd = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metadata_instructions_change_the_config() {
        let mut stage = Stage {
            shell: vec!["/bin/sh".into(), "-c".into()],
            ..Default::default()
        };
        env(&mut stage, "A=1 B=two", &BTreeMap::new(), '\\').expect("env");
        env(&mut stage, "A=3", &BTreeMap::new(), '\\').expect("env");
        assert_eq!(stage.runtime.env, ["A=3", "B=two"]);
        assert_eq!(stage.vars["A"], "3");
        workdir(&mut stage, "/srv");
        workdir(&mut stage, "app/../www");
        assert_eq!(stage.runtime.working_dir.as_deref(), Some("/srv/www"));
        expose(&mut stage, "80 53/UDP 8000-8010").expect("expose");
        assert!(stage.runtime.exposed_ports.contains("53/udp"));
        assert!(expose(&mut stage, "http").is_err());
        assert!(volume(&mut stage, vec![" ".into()]).is_err());
        cmd(&mut stage, &Args::Shell("serve".into()));
        assert_eq!(
            stage.runtime.cmd.as_deref(),
            Some(&["/bin/sh".to_string(), "-c".into(), "serve".into()][..])
        );
        let mut inherited = Stage {
            runtime: crate::image::RuntimeConfig {
                cmd: Some(vec!["old".into()]),
                ..Default::default()
            },
            ..Default::default()
        };
        entrypoint(&mut inherited, &Args::Exec(vec!["/app".into()]));
        assert_eq!(inherited.runtime.cmd, None, "an inherited CMD is dropped");
    }
}
