#!/usr/bin/env python3
"""ctkcheck: pgchaos's checker for Chaos Toolkit experiments (Python 3 stdlib).

This is NOT chaostoolkit: chaostoolkit cannot be installed where pgchaos is
tested (no PyPI). It follows chaostoolkit-lib's documented experiment format
and semantics (read from its docs and source, no code taken from it) for the
parts pgchaos's experiments use:

  ctkcheck.py validate EXPERIMENT.json
      The checks `chaos validate` makes: title, description, method present,
      activities (type action|probe, name, provider of type http|process|
      python, an http provider's url, a process provider's path found on
      PATH, timeout and pauses), hypothesis title and probe tolerances,
      configuration and secrets (env entries need a key; an env variable
      without default must be set, as chaostoolkit loads them when it
      validates), refs to activities. One rule is pgchaos's own, stricter
      than chaostoolkit: every ${name} must be a configuration or secret key
      (chaostoolkit passes an unknown ${name} on unchanged).

  ctkcheck.py run EXPERIMENT.json [--rollback-strategy default|always]
                  [--journal FILE]
      Validates, then runs the experiment as `chaos run` does: configuration
      and secrets from the environment, ${name} substitution (a value that is
      exactly "${name}" keeps its type), the steady-state hypothesis before
      and after the method, the method's activities in order with their
      pauses, then the rollbacks. Writes a journal shaped like chaostoolkit's
      (status, deviated, steady_states, run, rollbacks; each run with status,
      output, duration). Exits 1 when chaostoolkit would (status other than
      completed, or deviated), or when --strict finds an activity whose
      output is an error (see below).

chaostoolkit's semantics that are easy to get wrong, kept here on purpose:
  - an HTTP activity does not fail on a 4xx/5xx status and `expected_status`
    is ignored (chaostoolkit-lib only logs a warning since 0.9); a process
    activity does not fail on a non-zero exit code. Activities fail only on
    a connection error or a timeout.
  - tolerances are checked only for steady-state-hypothesis probes, not for
    probes in the method.
  - rollbacks run after the method whatever the method's activities
    returned and when the hypothesis deviated; with the default strategy
    they are skipped when the journal status is "failed" (a hypothesis
    probe raised, e.g. timed out); --rollback-strategy always plays them
    then too.
--strict (pgchaos's own, stricter than chaostoolkit) also fails the run when
an HTTP activity answered >= 400 or not its expected_status, a process exited
non-zero, or a method probe's output is outside its tolerance.

Not supported (rejected with a message): python providers at run time,
background activities, controls, vault secrets.
"""

import argparse
import json
import os
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import ChainMap
from datetime import datetime, timezone
from numbers import Number
from string import Template


class Invalid(Exception):
    """The experiment is invalid (InvalidExperiment/InvalidActivity)."""


class ActivityFailed(Exception):
    """The activity failed (chaostoolkit's ActivityFailed)."""


def where(activity, place):
    name = activity.get("name") if isinstance(activity, dict) else None
    return f"{place} '{name}'" if name else place


# Configuration and secrets.

ENV_TYPES = {
    None: lambda v: v, "str": lambda v: v, "string": lambda v: v,
    "int": int, "integer": int, "float": float, "number": float,
    "bytes": lambda v: v.encode("utf-8"),
    "bool": lambda v: v if isinstance(v, bool) else v.lower() not in ("false", "0", "no"),
    "json": lambda v: json.loads(v) if isinstance(v, str) and v != "" else v,
}


def load_configuration(info):
    if not isinstance(info, dict):
        raise Invalid("configuration must be a mapping")
    conf = {}
    for key, value in info.items():
        if isinstance(value, dict) and "type" in value:
            if value["type"] != "env":
                raise Invalid(f"configuration '{key}': type '{value['type']}' is not supported by this checker (only env)")
            env_key = value.get("key")
            if not isinstance(env_key, str) or not env_key:
                raise Invalid(f"configuration '{key}': an env entry requires a key")
            if env_key not in os.environ and "default" not in value:
                raise Invalid(f"Configuration makes reference to an environment key that does not exist: {env_key}")
            convert = ENV_TYPES.get(value.get("env_var_type"))
            if convert is None:
                raise Invalid(f"configuration '{key}': variable type can only be: bool, str, int, float, bytes or json")
            raw = os.environ.get(env_key, value.get("default"))
            try:
                conf[key] = convert(raw)
            except (ValueError, AttributeError) as x:
                raise Invalid(f"configuration '{key}': {env_key}={raw!r} is not {value.get('env_var_type')}: {x}")
        else:
            conf[key] = value
    return conf


def load_secrets(info, scope=None):
    if not isinstance(info, dict):
        raise Invalid("secrets must be a mapping of scopes")
    secrets = {}
    for key, value in info.items():
        name = f"{scope}.{key}" if scope else key
        if isinstance(value, dict):
            kind = value.get("type")
            if kind == "env":
                env_key = value.get("key")
                if not isinstance(env_key, str) or not env_key:
                    raise Invalid(f"secret '{name}': an env entry requires a key")
                if env_key not in os.environ:  # chaostoolkit has no default for secrets
                    raise Invalid(f"Secrets make reference to an environment key that does not exist: {env_key}")
                secrets[key] = os.environ[env_key]
            elif kind is not None:
                raise Invalid(f"secret '{name}': type '{kind}' is not supported by this checker (only env)")
            else:
                secrets[key] = load_secrets(value, name)
        else:
            secrets[key] = value
    return secrets


# Substitution: string.Template's safe_substitute over configuration then the
# secrets of every scope; a string that is exactly one ${name} keeps its type.

def substitute(data, mapping):
    if isinstance(data, str):
        t = Template(data)
        m = t.pattern.fullmatch(data)
        if m is not None:
            key = m.group("named") or m.group("braced")
            if key in mapping:
                return mapping[key]
        return t.safe_substitute(mapping)
    if isinstance(data, (list, tuple)):
        return [substitute(v, mapping) for v in data]
    if isinstance(data, dict):
        return {k: substitute(v, mapping) for k, v in data.items()}
    return data


BRACED = re.compile(r"\$\{([^}]*)\}")


def unresolved(data, mapping):
    """The ${name} references in data that are not in mapping."""
    if isinstance(data, str):
        return [n for n in BRACED.findall(data.replace("$$", "")) if n not in mapping]
    if isinstance(data, (list, tuple)):
        return [n for v in data for n in unresolved(v, mapping)]
    if isinstance(data, dict):
        return [n for v in data.values() for n in unresolved(v, mapping)]
    return []


# Validation.

def validate_activity(activity, place, mapping):
    if not activity:
        raise Invalid(f"{place}: empty activity is no activity")
    if not isinstance(activity, dict):
        raise Invalid(f"{place}: an activity must be a mapping")
    ref = activity.get("ref")
    if ref is not None:
        if not isinstance(ref, str) or ref == "":
            raise Invalid(f"{place}: reference to activity must be non-empty strings")
        return
    here = where(activity, place)
    kind = activity.get("type")
    if not kind:
        raise Invalid(f"{here}: an activity must have a type")
    if kind not in ("probe", "action"):
        raise Invalid(f"{here}: '{kind}' is not a supported activity type")
    if not activity.get("name"):
        raise Invalid(f"{here}: an activity must have a name")
    provider = activity.get("provider")
    if not provider:
        raise Invalid(f"{here}: an activity requires a provider")
    if not isinstance(provider, dict):
        raise Invalid(f"{here}: a provider must be a mapping")
    ptype = provider.get("type")
    if not ptype:
        raise Invalid(f"{here}: a provider must have a type")
    if ptype not in ("python", "process", "http"):
        raise Invalid(f"{here}: unknown provider type '{ptype}'")
    timeout = activity.get("timeout")
    if timeout is not None and not isinstance(timeout, Number):
        raise Invalid(f"{here}: activity timeout must be a number")
    pauses = activity.get("pauses")
    if pauses is not None:
        if not isinstance(pauses, dict):
            raise Invalid(f"{here}: pauses must be a mapping with before and/or after")
        for when in ("before", "after"):
            p = pauses.get(when)
            if isinstance(p, str) and not (p.startswith("${") and p.endswith("}")):
                raise Invalid(f"{here}: activity {when} pause must be a number or a pattern to a variable from the configuration or secrets")
    if "background" in activity:
        if not isinstance(activity["background"], bool):
            raise Invalid(f"{here}: activity background must be a boolean")
        if activity["background"]:
            raise Invalid(f"{here}: background activities are not supported by this checker")
    if ptype == "python":
        if not provider.get("module"):
            raise Invalid(f"{here}: a Python activity must have a module path")
        if not provider.get("func"):
            raise Invalid(f"{here}: a Python activity must have a function name")
    elif ptype == "process":
        path = provider.get("path")
        if not path:
            raise Invalid(f"{here}: a process activity must have a path")
        found = shutil.which(os.path.expanduser(path))
        if not found:
            raise Invalid(f"{here}: path '{path}' cannot be found, in activity '{activity['name']}'")
    elif ptype == "http":
        if not provider.get("url"):
            raise Invalid(f"{here}: a HTTP activity must have a URL")
        headers = provider.get("headers")
        if headers and not isinstance(headers, dict):
            raise Invalid(f"{here}: a HTTP activities expect headers as a mapping")
    missing = unresolved({k: v for k, v in activity.items() if k != "name"}, mapping)
    if missing:
        raise Invalid(f"{here}: ${{{missing[0]}}} is neither a configuration nor a secret key "
                      "(pgchaos's rule: chaostoolkit would pass it on unchanged)")


def validate_tolerance(probe, place):
    here = where(probe, place)
    if "tolerance" not in probe:
        raise Invalid(f"{here}: hypothesis probe must have a tolerance entry")
    tolerance = probe["tolerance"]
    if not isinstance(tolerance, (bool, int, list, str, dict)):
        raise Invalid(f"{here}: hypothesis probe tolerance must either be an integer, a string, "
                      "a boolean or a pair of values for boundaries (got "
                      f"{json.dumps(tolerance)})")
    if isinstance(tolerance, dict):
        kind = tolerance.get("type")
        if kind == "range":
            r = tolerance.get("range")
            if not (isinstance(r, list) and len(r) == 2 and all(isinstance(b, Number) for b in r)):
                raise Invalid(f"{here}: hypothesis range tolerance must have a `range` of two numbers")
        elif kind == "regex":
            try:
                re.compile(tolerance["pattern"])
            except (KeyError, TypeError, re.error) as x:
                raise Invalid(f"{here}: hypothesis regex tolerance needs a valid `pattern`: {x}")
        elif kind == "probe":
            validate_activity(tolerance, f"{here} tolerance", {})
        elif kind == "jsonpath":
            if not str(tolerance.get("path") or "").strip():
                raise Invalid(f"{here}: hypothesis jsonpath probe tolerance must have a `path` key")
        else:
            raise Invalid(f"{here}: hypothesis probe tolerance type '{kind}' is unsupported")


def validate(experiment):
    """Returns (configuration, secrets) or raises Invalid."""
    if not experiment:
        raise Invalid("an empty experiment is not an experiment")
    if not isinstance(experiment, dict):
        raise Invalid("an experiment must be a JSON object")
    if not experiment.get("title"):
        raise Invalid("experiment requires a title")
    if not experiment.get("description"):
        raise Invalid("experiment requires a description")
    tags = experiment.get("tags")
    if tags and any(t == "" or not isinstance(t, str) for t in tags):
        raise Invalid("experiment tags must be a non-empty string")
    for ext in experiment.get("extensions") or []:
        if not isinstance(ext, dict) or not str(ext.get("name") or "").strip():
            raise Invalid("All extensions require a non-empty name")
    if experiment.get("controls"):
        raise Invalid("controls are not supported by this checker")
    config = load_configuration(experiment.get("configuration", {}))
    secrets = load_secrets(experiment.get("secrets", {}))
    mapping = ChainMap(config, *secrets.values())

    hypo = experiment.get("steady-state-hypothesis")
    if hypo is not None:
        if not isinstance(hypo, dict) or not hypo.get("title"):
            raise Invalid("hypothesis requires a title")
        for i, probe in enumerate(hypo.get("probes") or []):
            place = f"steady-state-hypothesis probe {i}"
            validate_activity(probe, place, mapping)
            validate_tolerance(probe, place)

    method = experiment.get("method")
    if method is None:
        raise Invalid("an experiment requires a method, which can be empty for only checking steady state hypothesis")
    if not isinstance(method, list):
        raise Invalid("method must be a list of activities")
    names = {a.get("name") for a in method + ((hypo or {}).get("probes") or []) if isinstance(a, dict)}
    for i, activity in enumerate(method):
        validate_activity(activity, f"method activity {i}", mapping)
        ref = activity.get("ref")
        if ref and ref not in names:
            raise Invalid(f"method activity {i}: referenced activity '{ref}' could not be found in the experiment")
    rollbacks = experiment.get("rollbacks", [])
    if not isinstance(rollbacks, list):
        raise Invalid("rollbacks must be a list of activities")
    for i, activity in enumerate(rollbacks):
        validate_activity(activity, f"rollback {i}", mapping)
    return config, secrets


# Running.

def run_http(provider, mapping):
    url = substitute(provider["url"], mapping)
    method = provider.get("method", "GET").upper()
    headers = substitute(provider.get("headers") or {}, mapping)
    timeout = substitute(provider.get("timeout"), mapping)
    if isinstance(timeout, list):  # requests' (connect, read): urllib has one
        timeout = max(timeout)
    arguments = substitute(provider.get("arguments"), mapping)
    body = None
    if method == "GET":
        if arguments:
            url += ("&" if "?" in url else "?") + urllib.parse.urlencode(arguments, doseq=True)
    elif arguments is not None:
        # As requests does: json= only for this exact header, else data=.
        if headers.get("Content-Type") == "application/json":
            body = json.dumps(arguments).encode()
        elif isinstance(arguments, dict):
            body = urllib.parse.urlencode(arguments, doseq=True).encode()
            headers.setdefault("Content-Type", "application/x-www-form-urlencoded")
        else:
            body = arguments.encode() if isinstance(arguments, str) else arguments
    req = urllib.request.Request(url, data=body, method=method, headers={k: str(v) for k, v in headers.items()})
    ctx = None
    if provider.get("verify_tls", True) is False:
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    try:
        try:
            resp = urllib.request.urlopen(req, timeout=timeout, context=ctx)
        except urllib.error.HTTPError as x:  # a 4xx/5xx is a response, not a failure
            resp = x
        with resp:
            raw = resp.read()
            status, rheaders = resp.status, dict(resp.headers.items())
    except ValueError as x:
        raise ActivityFailed(f"invalid URL {url}: {x}")
    except (TimeoutError, OSError) as x:
        if isinstance(x, TimeoutError) or isinstance(getattr(x, "reason", None), TimeoutError):
            raise ActivityFailed("activity took too long to complete")
        raise ActivityFailed(f"failed to connect to {url}: {x}")
    text = raw.decode("utf-8", "replace")
    if rheaders.get("Content-Type") == "application/json":
        try:
            text = json.loads(text)
        except ValueError:
            pass
    return {"status": status, "headers": rheaders, "body": text}


def run_process(provider, mapping):
    timeout = provider.get("timeout")
    arguments = substitute(provider.get("arguments", []), mapping)
    path = shutil.which(os.path.expanduser(provider["path"]))
    shell = isinstance(arguments, str)
    if shell:
        argv = f"{path} {arguments}"
    else:
        if isinstance(arguments, dict):
            arguments = [x for kv in arguments.items() for x in kv]
        argv = [path] + [str(p) for p in arguments if p not in (None, "")]
    try:
        proc = subprocess.run(argv, timeout=timeout, capture_output=True, shell=shell)
    except subprocess.TimeoutExpired:
        raise ActivityFailed("process activity took too long to complete")
    return {"status": proc.returncode, "stdout": proc.stdout.decode("utf-8", "replace"),
            "stderr": proc.stderr.decode("utf-8", "replace")}


def now():
    return datetime.now(timezone.utc)


def execute(activity, experiment, mapping):
    if activity.get("ref"):
        activity = next(a for a in experiment.get("method", []) + experiment.get("steady-state-hypothesis", {}).get("probes", [])
                        if a.get("name") == activity["ref"] and not a.get("ref"))
    pauses = substitute(activity.get("pauses") or {}, mapping)
    if pauses.get("before"):
        time.sleep(pauses["before"])
    start = now()
    run = {"activity": activity, "output": None, "start": start.isoformat()}
    try:
        ptype = activity["provider"]["type"]
        if ptype == "http":
            run["output"] = run_http(activity["provider"], mapping)
        elif ptype == "process":
            run["output"] = run_process(activity["provider"], mapping)
        else:
            raise ActivityFailed("python providers are not run by this checker")
        run["status"] = "succeeded"
    except ActivityFailed as x:
        run["status"] = "failed"
        run["exception"] = str(x)
    end = now()
    run["end"] = end.isoformat()
    run["duration"] = (end - start).total_seconds()  # before the pause after, as chaostoolkit
    if pauses.get("after"):
        time.sleep(pauses["after"])
    return run


def within_tolerance(tolerance, value):
    if isinstance(tolerance, bool):
        return value == tolerance
    if isinstance(tolerance, (int, str)):
        if isinstance(tolerance, int) and isinstance(value, dict) and "status" in value:
            return value["status"] == tolerance
        return value == tolerance
    if isinstance(tolerance, list):
        if isinstance(value, dict) and "status" in value:
            return value["status"] in tolerance
        if len(tolerance) == 2:
            try:
                return tolerance[0] <= value <= tolerance[1]
            except TypeError:
                return False
        return value in tolerance
    return False  # dict tolerances are refused before the run


def hypothesis(experiment, mapping, log, when):
    hypo = experiment["steady-state-hypothesis"]
    state = {"steady_state_met": None, "probes": []}
    for probe in hypo.get("probes", []):
        run = execute(probe, experiment, mapping)
        state["probes"].append(run)
        run["tolerance_met"] = run["status"] == "succeeded" and within_tolerance(
            substitute(probe["tolerance"], mapping) if isinstance(probe["tolerance"], str) else probe["tolerance"],
            run["output"])
        log(f"steady state {when}", run)
        if not run["tolerance_met"]:
            state["steady_state_met"] = False
            return state
    state["steady_state_met"] = True
    return state


def describe(run):
    out = run.get("output")
    if run["status"] != "succeeded":
        what = run.get("exception", "")
    elif isinstance(out, dict) and "body" in out:
        what = f"HTTP {out['status']}"
    elif isinstance(out, dict):
        what = f"exit {out['status']}"
    else:
        what = ""
    tol = "" if "tolerance_met" not in run else (", tolerance met" if run["tolerance_met"] else ", tolerance NOT met")
    return f"{run['activity']['type']} {run['activity'].get('name', run['activity'].get('ref'))}: {run['status']} ({what}{tol}) {run['duration']:.3f}s"


def output_errors(run):
    """--strict: what chaostoolkit lets through but a user means as failure."""
    a, out = run["activity"], run.get("output")
    name = a.get("name")
    if run["status"] != "succeeded" or not isinstance(out, dict):
        return []
    errs = []
    expected = a["provider"].get("expected_status")
    if expected is not None and out["status"] != expected:
        errs.append(f"{name}: HTTP {out['status']}, expected_status {expected}")
    if "tolerance" in a:
        if "tolerance_met" not in run and not within_tolerance(a["tolerance"], out):
            errs.append(f"{name}: output outside its tolerance {json.dumps(a['tolerance'])}"
                        " (chaostoolkit checks tolerances only in the hypothesis)")
    elif a["provider"]["type"] == "http" and expected is None and out["status"] >= 400:
        errs.append(f"{name}: HTTP {out['status']}")
    elif a["provider"]["type"] == "process" and out["status"] != 0:
        errs.append(f"{name}: exit status {out['status']}")
    return errs


def run_experiment(experiment, strategy, strict, log):
    config, secrets = validate(experiment)
    hypo = experiment.get("steady-state-hypothesis") or {}
    for a in hypo.get("probes") or []:
        if isinstance(a.get("tolerance"), dict):
            raise Invalid(f"{where(a, 'probe')}: tolerances of type '{a['tolerance'].get('type')}' are not run by this checker")
    for a in (hypo.get("probes") or []) + experiment["method"] + experiment.get("rollbacks", []):
        if a.get("provider", {}).get("type") == "python":
            raise Invalid(f"{where(a, 'activity')}: python providers are not run by this checker")
    mapping = ChainMap(config, *secrets.values())
    journal = {"status": None, "deviated": False, "steady_states": {"before": None, "after": None},
               "run": [], "rollbacks": [], "start": now().isoformat()}
    with_ssh = bool((experiment.get("steady-state-hypothesis") or {}).get("probes"))
    method_ran = True
    if with_ssh:
        before = hypothesis(experiment, mapping, log, "before")
        journal["steady_states"]["before"] = before
        if not before["steady_state_met"]:
            journal["status"] = "failed" if any(p["status"] != "succeeded" for p in before["probes"]) else "completed"
            method_ran = False
    if method_ran:
        for activity in experiment["method"]:
            run = execute(activity, experiment, mapping)
            journal["run"].append(run)
            log("method", run)
        if with_ssh:
            after = hypothesis(experiment, mapping, log, "after")
            journal["steady_states"]["after"] = after
            if not after["steady_state_met"]:
                journal["deviated"] = True
                journal["status"] = "failed" if any(p["status"] != "succeeded" for p in after["probes"]) else "completed"
    if strategy == "always" or journal["status"] not in ("failed", "interrupted"):
        for activity in experiment.get("rollbacks", []):
            run = execute(activity, experiment, mapping)
            journal["rollbacks"].append(run)
            log("rollback", run)
    else:
        print(f"rollbacks skipped: status {journal['status']} (rollback strategy {strategy})")
    if journal["status"] is None:
        journal["status"] = "completed"
    journal["end"] = now().isoformat()
    errors = []
    if strict:
        for state in journal["steady_states"].values():
            errors += [e for p in (state or {}).get("probes", []) for e in output_errors(p)]
        errors += [e for r in journal["run"] + journal["rollbacks"] for e in output_errors(r)]
    journal["strict_errors"] = errors
    return journal


def main(argv):
    ap = argparse.ArgumentParser(prog="ctkcheck", description=__doc__.split("\n\n")[0])
    ap.add_argument("command", choices=["validate", "run"])
    ap.add_argument("experiment")
    ap.add_argument("--rollback-strategy", choices=["default", "always"], default="default")
    ap.add_argument("--strict", action="store_true")
    ap.add_argument("--journal")
    args = ap.parse_args(argv)
    try:
        with open(args.experiment) as f:
            experiment = json.load(f)
    except (OSError, ValueError) as x:
        print(f"{args.experiment}: invalid: cannot read the experiment: {x}")
        return 1
    try:
        if args.command == "validate":
            validate(experiment)
            print(f"{args.experiment}: valid")
            return 0
        journal = run_experiment(experiment, args.rollback_strategy, args.strict,
                                 lambda phase, run: print(f"{phase}: {describe(run)}", flush=True))
    except Invalid as x:
        print(f"{args.experiment}: invalid: {x}")
        return 1
    if args.journal:
        with open(args.journal, "w") as f:
            json.dump(journal, f, indent=2, default=str)
    for e in journal["strict_errors"]:
        print(f"strict: {e}")
    ok = journal["status"] == "completed" and not journal["deviated"] and not journal["strict_errors"]
    print(f"experiment ended with status {journal['status']}{', deviated' if journal['deviated'] else ''}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
