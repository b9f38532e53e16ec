//! Bounds on how deeply nested the values a template builds can be.
//!
//! minijinja drops, compares and prints values recursively, about 100–550 bytes of stack per
//! level in a release build, and a template can nest lists at about one level per fuel
//! unit, so fuel alone cannot keep a hostile template from overflowing the stack (an abort,
//! not a catchable error). Depth can only grow without limit through:
//!
//! * state carried across loop iterations, which in Jinja is only `{% set ns.attr = … %}`
//!   on a namespace: every `set` passes through [`GUARD_FILTER`] (see [`super::preprocess`]);
//! * filters that wrap their input in a new container, chained in one expression
//!   (`x|batch(1)|batch(1)|…`): `batch`, `slice`, `zip`, `items`, `dictsort`, `groupby` are
//!   replaced by versions that check their input first;
//! * literals (`[[[x]]]`) and calls, at most ~150 levels per expression (minijinja's parser
//!   limit), times the macro / recursive-loop nesting that the recursion limit allows.
//!
//! So every value is at most about `recursion_limit × (150 + MAX_DEPTH)` levels deep, and
//! renders run on a thread whose stack covers that (`RENDER_STACK_BYTES` in the parent).

use minijinja::value::{Kwargs, Rest, Value, ValueKind};
use minijinja::{filters, Environment, Error, ErrorKind, State};

/// Deepest value a `set` may store or a wrapping filter may take. Client data is at most
/// 128 levels deep (serde_json's recursion limit) plus a few levels of message structure.
pub(crate) const MAX_DEPTH: usize = 256;

/// Name of the guard filter the preprocessor applies to every `set`.
pub(crate) const GUARD_FILTER: &str = "__hearth_depth_guard";

/// Registers the guard filter and the checked wrapping filters.
pub(crate) fn install(env: &mut Environment<'static>) {
    env.add_filter(GUARD_FILTER, |state: &State, value: Value| {
        check(state, &value)?;
        Ok::<_, Error>(value)
    });
    env.add_filter(
        "batch",
        |state: &State, value: Value, count: usize, fill: Option<Value>| {
            check(state, &value)?;
            filters::batch(state, value, count, fill)
        },
    );
    env.add_filter(
        "slice",
        |state: &State, value: Value, count: usize, fill: Option<Value>| {
            check(state, &value)?;
            filters::slice(state, value, count, fill)
        },
    );
    env.add_filter("zip", |state: &State, value: Value, others: Rest<Value>| {
        check(state, &value)?;
        for other in others.iter() {
            check(state, other)?;
        }
        filters::zip(state, value, others)
    });
    env.add_filter("items", |state: &State, value: Value| {
        check(state, &value)?;
        filters::items(&value)
    });
    // minijinja's own registrations of these two charge fuel for sorting; the public
    // versions do not, so charge the item count here.
    env.add_filter("dictsort", |state: &State, value: Value, kwargs: Kwargs| {
        check(state, &value)?;
        state.consume_fuel(value.len().unwrap_or(0) as u64)?;
        filters::dictsort(&value, kwargs)
    });
    env.add_filter(
        "groupby",
        |state: &State, value: Value, attribute: Option<&str>, kwargs: Kwargs| {
            check(state, &value)?;
            state.consume_fuel(value.len().unwrap_or(0) as u64)?;
            filters::groupby(value, attribute, kwargs)
        },
    );
}

/// Fails if `value` is nested deeper than [`MAX_DEPTH`]. Charges one fuel per 64 values
/// visited, like minijinja's own per-item charges, so checking is not free work.
fn check(state: &State, value: &Value) -> Result<(), Error> {
    let mut visited = 0u64;
    let result = walk(value, 0, &mut visited);
    state.consume_fuel(visited / 64)?;
    result
}

fn walk(value: &Value, depth: usize, visited: &mut u64) -> Result<(), Error> {
    *visited += 1;
    match value.kind() {
        ValueKind::Seq | ValueKind::Map | ValueKind::Iterable => {}
        _ => return Ok(()),
    }
    if depth >= MAX_DEPTH {
        return Err(Error::new(
            ErrorKind::InvalidOperation,
            format!("value nested deeper than {MAX_DEPTH} levels"),
        ));
    }
    // Iterables are walked too (`dict(a=x)|items` is one): minijinja's built-in and
    // pycompat iterables are re-created on every `try_iter`, so walking consumes nothing.
    let is_map = value.kind() == ValueKind::Map;
    for item in value.try_iter()? {
        if is_map {
            let child = value.get_item(&item)?;
            walk(&child, depth + 1, visited)?;
        } else {
            walk(&item, depth + 1, visited)?;
        }
    }
    Ok(())
}
