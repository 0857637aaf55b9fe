package faults

// StatementClass is what kind of statement a piece of SQL starts with, in
// the words of the rule files: "commit", "prepare_transaction", "select"...
type StatementClass uint8

const (
	ClassNone StatementClass = iota // empty SQL: no statement
	ClassBegin
	ClassCommit
	ClassRollback
	ClassPrepareTransaction
	ClassCommitPrepared
	ClassRollbackPrepared
	ClassSelect
	ClassInsert
	ClassUpdate
	ClassDelete
	ClassDDL
	ClassOther
	numClasses
)

var classNames = [numClasses]string{
	ClassNone:               "none",
	ClassBegin:              "begin",
	ClassCommit:             "commit",
	ClassRollback:           "rollback",
	ClassPrepareTransaction: "prepare_transaction",
	ClassCommitPrepared:     "commit_prepared",
	ClassRollbackPrepared:   "rollback_prepared",
	ClassSelect:             "select",
	ClassInsert:             "insert",
	ClassUpdate:             "update",
	ClassDelete:             "delete",
	ClassDDL:                "ddl",
	ClassOther:              "other",
}

func (c StatementClass) String() string {
	if c < numClasses {
		return classNames[c]
	}
	return "unknown"
}

// StatementClasses returns the class names a rule's match.statement may
// use, in the order of the classes.
func StatementClasses() []string {
	return append([]string(nil), classNames[ClassNone+1:]...)
}

// parseClass maps a class name from a rule to its value.
func parseClass(name string) (StatementClass, bool) {
	for c, n := range classNames {
		if n == name && StatementClass(c) != ClassNone {
			return StatementClass(c), true
		}
	}
	return 0, false
}

// Classify returns the class of the first statement in sql. It skips
// leading white space, comments and parentheses and looks at one or two
// keywords, without allocating. A simple Query may hold several statements;
// only the first decides the class (a rule's sql pattern sees them all).
func Classify(sql []byte) StatementClass {
	w1, rest := keyword(sql)
	switch {
	case len(w1) == 0:
		return ClassNone
	case is(w1, "BEGIN"):
		return ClassBegin
	case is(w1, "START"):
		if w2, _ := keyword(rest); is(w2, "TRANSACTION") {
			return ClassBegin
		}
		return ClassOther
	case is(w1, "COMMIT"), is(w1, "END"):
		if w2, _ := keyword(rest); is(w2, "PREPARED") {
			return ClassCommitPrepared
		}
		return ClassCommit
	case is(w1, "ROLLBACK"), is(w1, "ABORT"):
		if w2, _ := keyword(rest); is(w2, "PREPARED") {
			return ClassRollbackPrepared
		}
		return ClassRollback
	case is(w1, "PREPARE"):
		if w2, _ := keyword(rest); is(w2, "TRANSACTION") {
			return ClassPrepareTransaction
		}
		return ClassOther
	case is(w1, "SELECT"), is(w1, "WITH"), is(w1, "VALUES"), is(w1, "TABLE"):
		return ClassSelect
	case is(w1, "INSERT"):
		return ClassInsert
	case is(w1, "UPDATE"):
		return ClassUpdate
	case is(w1, "DELETE"):
		return ClassDelete
	case is(w1, "CREATE"), is(w1, "ALTER"), is(w1, "DROP"), is(w1, "TRUNCATE"),
		is(w1, "COMMENT"), is(w1, "GRANT"), is(w1, "REVOKE"):
		return ClassDDL
	}
	return ClassOther
}

// keyword returns the first word of b after white space, "--" and "/* */"
// comments and opening parentheses, and what follows it.
func keyword(b []byte) (word, rest []byte) {
	i := 0
	for i < len(b) {
		c := b[i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '(' || c == ';':
			i++
		case c == '-' && i+1 < len(b) && b[i+1] == '-':
			for i < len(b) && b[i] != '\n' {
				i++
			}
		case c == '/' && i+1 < len(b) && b[i+1] == '*':
			// Block comments nest in PostgreSQL.
			depth := 0
			for i < len(b) {
				if b[i] == '/' && i+1 < len(b) && b[i+1] == '*' {
					depth++
					i += 2
				} else if b[i] == '*' && i+1 < len(b) && b[i+1] == '/' {
					depth--
					i += 2
					if depth == 0 {
						break
					}
				} else {
					i++
				}
			}
		default:
			j := i
			for j < len(b) && isWordByte(b[j]) {
				j++
			}
			if j == i {
				j++ // not a keyword: a quote, a backslash command...
			}
			return b[i:j], b[j:]
		}
	}
	return nil, nil
}

func isWordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_'
}

// is compares an ASCII word with an upper-case keyword, ignoring case.
func is(word []byte, upper string) bool {
	if len(word) != len(upper) {
		return false
	}
	for i := range word {
		c := word[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		if c != upper[i] {
			return false
		}
	}
	return true
}
