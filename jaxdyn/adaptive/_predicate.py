"""The predicates of adaptive sweeps: ``[refine] where`` (SQL over the runs table, run by
DuckDB read-only) and ``stop`` (a comparison of metrics, evaluated on the device).

Pure Python here except :func:`compile_stop`, which imports JAX only when called.
"""

from __future__ import annotations

import ast
import difflib
import re
from typing import Callable, Mapping

from jaxdyn.sweep_types import JaxdynError


class PredicateError(JaxdynError, ValueError):
    """A predicate cannot be parsed or names an unknown column/metric."""


# ---- [refine] where: SQL -------------------------------------------------------------------
def _wrap(pred: str, table: str = "runs") -> str:
    return f"SELECT CAST(({pred}) AS BOOLEAN) AS hit FROM {table}"


def check_where_syntax(pred: str) -> None:
    """One SQL boolean expression (no second statement smuggled in); columns unchecked."""
    import duckdb

    if ";" in pred:
        raise PredicateError("expected one SQL expression (a predicate), not several "
                             "statements (';')")
    con = duckdb.connect(":memory:")
    try:
        stmts = con.extract_statements(_wrap(pred))
    except duckdb.Error as e:
        raise PredicateError(f"not a valid SQL predicate ({_first(e)}); expected an "
                             f"expression over the runs table's columns, like "
                             f"\"final_b < -0.01\"") from None
    finally:
        con.close()
    if len(stmts) != 1 or stmts[0].type.name != "SELECT":
        raise PredicateError("expected one SQL expression (a predicate), not several "
                             "statements")


def check_where(pred: str, columns: Mapping[str, str]) -> None:
    """Bind ``pred`` against an empty runs table with ``columns`` ({name: DuckDB type}), with
    file access off: an unknown column, a type error or a file read is refused here."""
    import duckdb

    check_where_syntax(pred)
    con = duckdb.connect(":memory:")
    try:
        cols = ", ".join(f'"{k}" {t}' for k, t in columns.items())
        con.execute(f"CREATE TABLE runs ({cols})")
        con.execute("SET enable_external_access = false")
        con.execute("SET lock_configuration = true")
        con.execute(_wrap(pred)).fetchall()
    except duckdb.Error as e:
        msg = _first(e)
        hint = ""
        m = re.search(r'column "?([^"\s]+)"? not found', msg, re.I)
        if m:
            c = difflib.get_close_matches(m.group(1), list(columns), n=1, cutoff=0.5)
            hint = f" (did you mean '{c[0]}'?)" if c else ""
            msg = f"no column {m.group(1)!r} in the runs table{hint}; its columns: " \
                  f"{list(columns)}"
        raise PredicateError(f"bad predicate: {msg}") from None
    finally:
        con.close()


def _first(e: Exception) -> str:
    lines = [ln for ln in str(e).strip().splitlines() if ln.strip()]
    return lines[0] if lines else type(e).__name__  # (not the LINE 1: echo of the query)


def evaluate_where(folder, pred: str):
    """``{run_id: bool}`` of every committed run of the sweep in ``folder`` (NULL: False)."""
    from jaxdyn.results.sql import _connect_folders

    with _connect_folders([folder]) as con:
        df = con.df(f"SELECT run_id, coalesce(CAST(({pred}) AS BOOLEAN), false) AS hit "
                    f"FROM runs")
    return dict(zip(df["run_id"].tolist(), df["hit"].astype(bool).tolist()))


# ---- stop: a comparison of metrics ---------------------------------------------------------
_OPS = (ast.Lt, ast.LtE, ast.Gt, ast.GtE, ast.Eq, ast.NotEq)
_ARITH = (ast.Add, ast.Sub, ast.Mult, ast.Div)


def _to_python(text: str) -> str:
    t = re.sub(r"\b(AND|OR|NOT)\b", lambda m: m.group(1).lower(), text, flags=re.I)
    t = t.replace("<>", "!=")
    return re.sub(r"(?<![<>=!])=(?!=)", "==", t)


def parse_stop(text: str) -> ast.Expression:
    """``stop`` as an expression tree: comparisons of metrics and numbers (``<  <=  >  >=  =
    !=``, arithmetic ``+ - * /``) joined by ``and``/``or``/``not`` (any case)."""
    example = "expected a comparison of metrics like \"loss < 1e-8\" or " \
              "\"loss < 1e-8 and abs_b > 0.1\""
    try:
        tree = ast.parse(_to_python(text).strip(), mode="eval")
    except SyntaxError:
        raise PredicateError(f"cannot parse {text!r}: {example}") from None

    def check(node, boolean: bool):
        if isinstance(node, ast.BoolOp):
            if not boolean:
                raise PredicateError(f"{text!r}: 'and'/'or' inside arithmetic; {example}")
            for v in node.values:
                check(v, True)
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            if not boolean:
                raise PredicateError(f"{text!r}: 'not' inside arithmetic; {example}")
            check(node.operand, True)
        elif isinstance(node, ast.Compare):
            if not boolean or not all(isinstance(o, _OPS) for o in node.ops):
                raise PredicateError(f"{text!r}: unsupported comparison; {example}")
            for v in (node.left, *node.comparators):
                check(v, False)
        elif boolean:
            raise PredicateError(f"{text!r} is not a condition; {example}")
        elif isinstance(node, ast.Name):
            pass
        elif isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) \
                and not isinstance(node.value, bool):
            pass
        elif isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            check(node.operand, False)
        elif isinstance(node, ast.BinOp) and isinstance(node.op, _ARITH):
            check(node.left, False)
            check(node.right, False)
        else:
            raise PredicateError(f"{text!r}: unsupported element "
                                 f"{type(node).__name__}; {example}")

    check(tree.body, True)
    return tree


def stop_names(text: str) -> list[str]:
    """The metric names ``stop`` reads, in order of appearance."""
    return list(dict.fromkeys(n.id for n in ast.walk(parse_stop(text))
                              if isinstance(n, ast.Name)))


def compile_stop(text: str) -> Callable:
    """``stop`` as ``f(metrics: dict) -> bool array`` (jnp; vmaps and jits)."""
    import jax.numpy as jnp

    tree = parse_stop(text)
    cmp = {ast.Lt: jnp.less, ast.LtE: jnp.less_equal, ast.Gt: jnp.greater,
           ast.GtE: jnp.greater_equal, ast.Eq: jnp.equal, ast.NotEq: jnp.not_equal}
    arith = {ast.Add: jnp.add, ast.Sub: jnp.subtract, ast.Mult: jnp.multiply,
             ast.Div: jnp.divide}

    def ev(node, m):
        if isinstance(node, ast.BoolOp):
            vals = [ev(v, m) for v in node.values]
            f = jnp.logical_and if isinstance(node.op, ast.And) else jnp.logical_or
            out = vals[0]
            for v in vals[1:]:
                out = f(out, v)
            return out
        if isinstance(node, ast.UnaryOp):
            x = ev(node.operand, m)
            if isinstance(node.op, ast.Not):
                return jnp.logical_not(x)
            return -x if isinstance(node.op, ast.USub) else x
        if isinstance(node, ast.Compare):
            out, left = None, ev(node.left, m)
            for op, right in zip(node.ops, node.comparators):
                r = ev(right, m)
                c = cmp[type(op)](left, r)
                out = c if out is None else jnp.logical_and(out, c)
                left = r
            return out
        if isinstance(node, ast.BinOp):
            return arith[type(node.op)](ev(node.left, m), ev(node.right, m))
        if isinstance(node, ast.Name):
            return m[node.id]
        return node.value

    return lambda metrics: jnp.asarray(ev(tree.body, metrics), bool)
