package faults

import (
	"strconv"
	"strings"
)

// RedactSQL returns sql with every constant replaced by a parameter
// placeholder, numbered $1, $2, ... in order of appearance: string
// constants ('...', E'...', B'...', X'...', N'...', U&'...'), dollar-quoted
// strings ($$...$$, $tag$...$tag$) and numeric constants (42, 3.5, .5,
// 1e-3, 0x1F, 1_000). What shows the statement's shape stays as written:
// keywords, identifiers (t1 stays t1), quoted identifiers ("a'b"),
// operators (a minus sign stays in front of its $n), comments, whitespace,
// TRUE, FALSE and NULL. A placeholder already in the SQL keeps its number
// and the new ones continue after the highest, as pg_stat_statements does:
// "SELECT $1, 'x'" becomes "SELECT $1, $2".
//
// It reads SQL as PostgreSQL does with standard_conforming_strings on (the
// default since 9.1): a backslash escapes only inside E'...'. A constant
// left open at the end of the input is replaced up to the end, so that a
// truncated statement cannot leak the rest of a secret.
//
// RedactSQL is a pure function of its input and never fails; statements
// that differ only in their constants redact to the same text, which makes
// it usable as a statement fingerprint.
func RedactSQL(sql []byte) string {
	next := 1
	scanSQL(sql, func(kind sqlToken, tok []byte) {
		if kind == tokPlaceholder {
			if n, err := strconv.Atoi(string(tok[1:])); err == nil && n >= next {
				next = n + 1
			}
		}
	})
	var out strings.Builder
	out.Grow(len(sql))
	scanSQL(sql, func(kind sqlToken, tok []byte) {
		if kind != tokConstant {
			out.Write(tok)
			return
		}
		out.WriteByte('$')
		out.WriteString(strconv.Itoa(next))
		next++
	})
	return out.String()
}

type sqlToken int

const (
	tokVerbatim    sqlToken = iota // keywords, identifiers, operators, comments, ...
	tokConstant                    // a string or numeric constant
	tokPlaceholder                 // $n
)

// scanSQL splits sql into constants, placeholders and the rest, in order;
// the pieces together are sql.
func scanSQL(sql []byte, emit func(kind sqlToken, tok []byte)) {
	for i := 0; i < len(sql); {
		kind, end := sqlTokenAt(sql, i)
		emit(kind, sql[i:end])
		i = end
	}
}

// sqlTokenAt reads the token that starts at sql[i]: its kind and where it
// ends. It is scanSQL's step, for walkers that must not allocate a closure.
func sqlTokenAt(sql []byte, i int) (sqlToken, int) {
	c := sql[i]
	kind, end := tokVerbatim, i+1
	switch {
	case c == '-' && i+1 < len(sql) && sql[i+1] == '-':
		end = lineCommentEnd(sql, i)
	case c == '/' && i+1 < len(sql) && sql[i+1] == '*':
		end = blockCommentEnd(sql, i)
	case c == '"':
		end = quotedEnd(sql, i, '"', false)
	case c == '\'':
		kind, end = tokConstant, quotedEnd(sql, i, '\'', false)
	case c == '$':
		if e, ok := dollarQuoteEnd(sql, i); ok {
			kind, end = tokConstant, e
			break
		}
		for end < len(sql) && isDigit(sql[end]) {
			end++
		}
		if end > i+1 {
			kind = tokPlaceholder
		}
	case isDigit(c) || c == '.' && i+1 < len(sql) && isDigit(sql[i+1]):
		kind, end = tokConstant, numberEnd(sql, i)
	case isIdentStart(c):
		for end < len(sql) && isIdentPart(sql[end]) {
			end++
		}
		// A one-letter prefix glued to a quote is part of the constant.
		if end == i+1 && end < len(sql) && sql[end] == '\'' {
			switch c | 0x20 {
			case 'e':
				kind, end = tokConstant, quotedEnd(sql, end, '\'', true)
			case 'b', 'x', 'n':
				kind, end = tokConstant, quotedEnd(sql, end, '\'', false)
			}
		} else if end == i+1 && c|0x20 == 'u' && end+1 < len(sql) && sql[end] == '&' && sql[end+1] == '\'' {
			kind, end = tokConstant, quotedEnd(sql, end+1, '\'', false)
		}
	default:
		// One byte of anything else: whitespace, an operator, a comma.
	}
	return kind, end
}

// lineCommentEnd is where a -- comment starting at i ends (its newline
// stays outside).
func lineCommentEnd(sql []byte, i int) int {
	for i < len(sql) && sql[i] != '\n' {
		i++
	}
	return i
}

// blockCommentEnd is just past a /* comment starting at i; they nest.
func blockCommentEnd(sql []byte, i int) int {
	depth := 0
	for i < len(sql) {
		switch {
		case sql[i] == '/' && i+1 < len(sql) && sql[i+1] == '*':
			depth++
			i += 2
		case sql[i] == '*' && i+1 < len(sql) && sql[i+1] == '/':
			depth--
			i += 2
			if depth == 0 {
				return i
			}
		default:
			i++
		}
	}
	return i
}

// quotedEnd is just past the quoted text opening at i with q; a doubled q
// is one q, and with backslashes (E'...') a backslash escapes the next byte.
func quotedEnd(sql []byte, i int, q byte, backslashes bool) int {
	for i++; i < len(sql); i++ {
		switch sql[i] {
		case '\\':
			if backslashes {
				i++
			}
		case q:
			if i+1 < len(sql) && sql[i+1] == q {
				i++
				continue
			}
			return i + 1
		}
	}
	return len(sql)
}

// dollarQuoteEnd reports whether a dollar quote ($$ or $tag$) opens at i,
// and where it ends.
func dollarQuoteEnd(sql []byte, i int) (int, bool) {
	j := i + 1
	if j < len(sql) && isIdentStart(sql[j]) {
		for j < len(sql) && isIdentPart(sql[j]) && sql[j] != '$' {
			j++
		}
	}
	if j >= len(sql) || sql[j] != '$' {
		return 0, false
	}
	delim := sql[i : j+1]
	for k := j + 1; k+len(delim) <= len(sql); k++ {
		if sql[k] == '$' && string(sql[k:k+len(delim)]) == string(delim) {
			return k + len(delim), true
		}
	}
	return len(sql), true
}

// numberEnd is just past a numeric constant starting at i: digits with
// underscores, a fraction, an exponent, or 0x/0o/0b digits.
func numberEnd(sql []byte, i int) int {
	if sql[i] == '0' && i+1 < len(sql) && strings.IndexByte("xXoObB", sql[i+1]) >= 0 {
		i += 2
		for i < len(sql) && (isHexDigit(sql[i]) || sql[i] == '_') {
			i++
		}
		return i
	}
	for i < len(sql) && (isDigit(sql[i]) || sql[i] == '_') {
		i++
	}
	if i < len(sql) && sql[i] == '.' && !(i+1 < len(sql) && sql[i+1] == '.') {
		for i++; i < len(sql) && (isDigit(sql[i]) || sql[i] == '_'); i++ {
		}
	}
	if i < len(sql) && sql[i]|0x20 == 'e' {
		j := i + 1
		if j < len(sql) && (sql[j] == '+' || sql[j] == '-') {
			j++
		}
		if j < len(sql) && isDigit(sql[j]) {
			for i = j; i < len(sql) && isDigit(sql[i]); i++ {
			}
		}
	}
	return i
}

func isDigit(c byte) bool    { return c >= '0' && c <= '9' }
func isHexDigit(c byte) bool { return isDigit(c) || c|0x20 >= 'a' && c|0x20 <= 'f' }

// isIdentStart: letters, underscore and any non-ASCII byte, as PostgreSQL's
// lexer has it.
func isIdentStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c == '_' || c >= 0x80
}

func isIdentPart(c byte) bool { return isIdentStart(c) || isDigit(c) || c == '$' }
