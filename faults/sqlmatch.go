package faults

import (
	"regexp"
	"regexp/syntax"
	"sync"
	"unicode/utf8"
)

// sqlMatcher is a rule's SQL pattern. Case-insensitive matching in Go's
// regexp runs the slow general matcher (about 20 times slower on a typical
// query than a case-sensitive literal search), so a case-insensitive
// pattern is rewritten to match ASCII-lowercased SQL case-sensitively:
// same answers, and literal searches stay literal.
//
// Two non-ASCII letters fold to ASCII ones: ſ (U+017F) to s and K (Kelvin
// sign, U+212A) to k. (?i)select matches "ſELECT"; the lowered literal
// would not. SQL holding either is matched with the (?i) regexp instead.
type sqlMatcher struct {
	re    *regexp.Regexp
	lower bool           // match against the SQL lowercased (ASCII)
	fold  *regexp.Regexp // with lower: the (?i) regexp, for SQL with ſ or K
}

func compileSQL(expr string, caseSensitive bool) (*sqlMatcher, error) {
	if caseSensitive {
		re, err := regexp.Compile(expr)
		if err != nil {
			return nil, err
		}
		return &sqlMatcher{re: re}, nil
	}
	fold, err := regexp.Compile("(?i)" + expr)
	if err != nil {
		// Say what is wrong with the pattern the user wrote, not with
		// the one prefixed here.
		if _, plain := regexp.Compile(expr); plain != nil {
			return nil, plain
		}
		return nil, err
	}
	tree, err := syntax.Parse(expr, syntax.Perl|syntax.FoldCase)
	if err != nil {
		return nil, err
	}
	if !foldsEverywhere(tree) {
		// Part of the pattern is case-sensitive ((?-i)...): lowercased
		// input would change its answers.
		return &sqlMatcher{re: fold}, nil
	}
	lowerLiterals(tree)
	re, err := regexp.Compile(tree.String())
	if err != nil {
		return nil, err
	}
	return &sqlMatcher{re: re, lower: true, fold: fold}, nil
}

// foldsEverywhere reports whether every letter in the pattern matches both
// its cases, so that lowercasing the input cannot change the outcome.
func foldsEverywhere(re *syntax.Regexp) bool {
	switch re.Op {
	case syntax.OpLiteral:
		if re.Flags&syntax.FoldCase == 0 {
			for _, r := range re.Rune {
				if r >= 'A' && r <= 'Z' || r >= 'a' && r <= 'z' {
					return false
				}
			}
		}
	case syntax.OpCharClass:
		in := func(c rune) bool {
			for i := 0; i+1 < len(re.Rune); i += 2 {
				if c >= re.Rune[i] && c <= re.Rune[i+1] {
					return true
				}
			}
			return false
		}
		for c := 'A'; c <= 'Z'; c++ {
			if in(c) != in(c+'a'-'A') {
				return false
			}
		}
	}
	for _, sub := range re.Sub {
		if !foldsEverywhere(sub) {
			return false
		}
	}
	return true
}

// lowerLiterals turns case-folded ASCII literals into lowercase,
// case-sensitive ones. Character classes were already folded by the parser;
// non-ASCII literals keep folding.
func lowerLiterals(re *syntax.Regexp) {
	if re.Op == syntax.OpLiteral && re.Flags&syntax.FoldCase != 0 {
		ascii := true
		for _, r := range re.Rune {
			if r >= utf8.RuneSelf {
				ascii = false
				break
			}
		}
		if ascii {
			for i, r := range re.Rune {
				if r >= 'A' && r <= 'Z' {
					re.Rune[i] = r + ('a' - 'A')
				}
			}
			re.Flags &^= syntax.FoldCase
		}
	}
	for _, sub := range re.Sub {
		lowerLiterals(sub)
	}
}

var lowerBufs = sync.Pool{New: func() any { b := make([]byte, 0, 1024); return &b }}

// loweredSQL lowercases a message's SQL once for all the rules that look
// at it. Release returns the buffer.
type loweredSQL struct {
	buf  *[]byte
	done bool
	// folds: the SQL holds ſ or K, which lowercasing ASCII cannot fold.
	folds bool
}

func (l *loweredSQL) get(sql []byte) []byte {
	if !l.done {
		l.buf = lowerBufs.Get().(*[]byte)
		b := append((*l.buf)[:0], sql...)
		for i, c := range b {
			switch {
			case c >= 'A' && c <= 'Z':
				b[i] = c + ('a' - 'A')
			case c == 0xC5 && i+1 < len(b) && b[i+1] == 0xBF, // ſ
				c == 0xE2 && i+2 < len(b) && b[i+1] == 0x84 && b[i+2] == 0xAA: // K
				l.folds = true
			}
		}
		*l.buf = b
		l.done = true
	}
	return *l.buf
}

func (l *loweredSQL) release() {
	if l.buf != nil {
		lowerBufs.Put(l.buf)
	}
}

func (m *sqlMatcher) match(sql []byte, lowered *loweredSQL) bool {
	if !m.lower {
		return m.re.Match(sql)
	}
	b := lowered.get(sql)
	if lowered.folds {
		return m.fold.Match(sql)
	}
	return m.re.Match(b)
}
