package faults

import (
	"regexp"
	"strings"
	"testing"
	"unicode"
)

// The lowercasing rewrite must answer exactly like Go's own (?i) matching.
func TestSQLMatcherAgreesWithFoldCase(t *testing.T) {
	patterns := []string{
		`^\s*SELECT`, `pgbench_tellers`, `DELETE\s+FROM\s+audit`, `[A-Z]+_id`, `[^a-z]`, `\bCOMMIT\b`,
		`(?-i)SELECT`, `Straße`, `prepare transaction '[^']+'`, `^(BEGIN|START TRANSACTION)`, `x{2,}Y`, `\QA.B\E`,
		`kill`, `\bask\b`,
		// Case-sensitive parts at the alphabet's ends, as literals and as
		// classes: the rewrite must see that they do not fold.
		`(?-i)A`, `(?-i)Z`, `(?-i)a`, `(?-i)z`, `(?-i)[A-Z]+`, `(?-i)[a-z]+`, `(?-i)[A]`, `(?-i)[Z]`, `(?-i)[a]`, `(?-i)[z]`,
		`(?-i)[AC]`, `(?-i)[XZ]`, `(?-i)[Z0]`, `(?-i)[A0]`,
		`ZETA`, `zone`, `[z]`,
	}
	inputs := []string{
		"SELECT 1", "  select abalance FROM pgbench_accounts", "UPDATE PGBENCH_TELLERS SET x=1", "delete   from AUDIT",
		"USER_ID", "abc", "123", "COMMIT", "commitment", "select 1", "STRASSE", "straße", "STRAßE",
		"PREPARE TRANSACTION 'g1'", "begin", "start transaction", "xxY", "XXy", "a.b", "AxB", "",
		"ſELECT 1", "\u212aILL", "aſ\u212a", // fold to s and k
		"A", "Z", "a", "z", "C", "X", "c", "x", "SELECT zeta", "ZONE",
	}
	for _, p := range patterns {
		want := regexp.MustCompile("(?i)" + p)
		got, err := compileSQL(p, false)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		for _, in := range inputs {
			if w, g := want.MatchString(in), got.match([]byte(in), &loweredSQL{}); w != g {
				t.Errorf("pattern %q on %q: (?i) says %v, rewritten says %v (rewritten to %s)", p, in, w, g, got.re)
			}
		}
	}
}

// sqlMatcher falls back to (?i) for SQL with ſ or K because they are the
// only non-ASCII runes that fold to ASCII letters.
func TestOnlySAndKFoldToASCII(t *testing.T) {
	for r := rune(0x80); r <= unicode.MaxRune; r++ {
		for f := unicode.SimpleFold(r); f != r; f = unicode.SimpleFold(f) {
			if f < 0x80 && r != '\u017f' && r != '\u212a' {
				t.Errorf("%U folds to %q: the lowered SQL matcher must fall back to (?i) for it too", r, f)
			}
		}
	}
}

// A bad pattern's error quotes the pattern as the user wrote it, not with
// the (?i) that case-insensitive matching puts in front of it.
func TestSQLPatternErrorQuotesTheUsersPattern(t *testing.T) {
	for _, p := range []string{"(", "x)", "[a-", "a**"} {
		_, err := compileSQL(p, false)
		if err == nil {
			t.Fatalf("%q compiled", p)
		}
		if strings.Contains(err.Error(), "(?i)") || !strings.Contains(err.Error(), "`") {
			t.Errorf("%q: %v; want the error to quote the pattern as written", p, err)
		}
	}
}
