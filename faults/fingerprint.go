package faults

import (
	"math"
	"strconv"
)

// fingerprintMatcher is a rule's match.fingerprint: a statement matches when
// RedactSQL of its SQL equals RedactSQL of the fingerprint. That is how
// `pgchaos explore` names a statement it learnt (its constants normalised,
// as pg_stat_statements does), so a rule can aim at one statement's every
// execution whatever its literals and whichever protocol sent it.
type fingerprintMatcher struct {
	// want is the fingerprint normalised once, when the rule is compiled.
	want string
}

func compileFingerprint(fp string) *fingerprintMatcher {
	return &fingerprintMatcher{want: RedactSQL([]byte(fp))}
}

// match reports whether RedactSQL(sql) == m.want without building the
// redacted text: Decide runs it on the hot path, where it must not
// allocate. It walks sql's tokens and compares each, as RedactSQL would
// write it, with the next bytes of want, so a statement of another shape
// fails at its first differing token.
func (m *fingerprintMatcher) match(sql []byte) bool {
	want := m.want
	pos := 0
	// RedactSQL numbers constants after the highest placeholder already in
	// the statement, which takes a pass of its own; most statements differ
	// from the fingerprint before their first constant, so it is only made
	// once one is reached.
	next, numbered := 1, false
	for i := 0; i < len(sql); {
		kind, end := sqlTokenAt(sql, i)
		tok := sql[i:end]
		i = end
		if kind == tokConstant {
			if !numbered {
				next, numbered = firstConstantNumber(sql), true
			}
			var buf [24]byte // "$" and an int64 in decimal
			tok = strconv.AppendInt(append(buf[:0], '$'), int64(next), 10)
			next++
		}
		if len(want)-pos < len(tok) || want[pos:pos+len(tok)] != string(tok) {
			return false
		}
		pos += len(tok)
	}
	return pos == len(want)
}

// firstConstantNumber is the number RedactSQL gives the first constant of
// sql: one more than the highest placeholder before it in its own first
// pass (wrapping as its int does).
func firstConstantNumber(sql []byte) int {
	next := 1
	for i := 0; i < len(sql); {
		kind, end := sqlTokenAt(sql, i)
		if kind == tokPlaceholder {
			if n, ok := atoiDigits(sql[i+1 : end]); ok && n >= next {
				next = n + 1
			}
		}
		i = end
	}
	return next
}

// atoiDigits is strconv.Atoi for a run of ASCII digits, without the string
// conversion: ok is false where Atoi fails, on a value beyond an int.
func atoiDigits(b []byte) (int, bool) {
	n := 0
	for _, c := range b {
		d := int(c - '0')
		if n > (math.MaxInt-d)/10 {
			return 0, false
		}
		n = n*10 + d
	}
	return n, true
}
