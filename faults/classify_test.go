package faults

import "testing"

func TestClassify(t *testing.T) {
	tests := []struct {
		sql  string
		want StatementClass
	}{
		// Empty and blank input: no statement.
		{"", ClassNone},
		{"   \n\t ", ClassNone},
		{";", ClassNone},
		{"-- only a comment", ClassNone},
		{"/* only a comment */", ClassNone},
		{"/* unterminated comment SELECT 1", ClassNone},
		{"/* ends in a star *", ClassNone},
		{"/", ClassOther},

		// Transaction control.
		{"BEGIN", ClassBegin},
		{"begin", ClassBegin},
		{"BEGIN ISOLATION LEVEL SERIALIZABLE", ClassBegin},
		{"BEGIN;", ClassBegin},
		{"START TRANSACTION", ClassBegin},
		{"start transaction read only", ClassBegin},
		{"START", ClassOther},
		{"COMMIT", ClassCommit},
		{"commit;", ClassCommit},
		{"END", ClassCommit},
		{"end transaction", ClassCommit},
		{"COMMIT PREPARED 'x'", ClassCommitPrepared},
		{"commit prepared 'gid-1'", ClassCommitPrepared},
		{"ROLLBACK", ClassRollback},
		{"ABORT", ClassRollback},
		{"rollback to savepoint s1", ClassRollback},
		{"ROLLBACK PREPARED 'x'", ClassRollbackPrepared},
		{"PREPARE TRANSACTION 'g'", ClassPrepareTransaction},
		{"prepare transaction 'g'", ClassPrepareTransaction},
		{"PREPARE foo AS SELECT 1", ClassOther},
		{"PREPARE transactionx AS SELECT 1", ClassOther},

		// Queries.
		{"SELECT 1", ClassSelect},
		{"select abalance from pgbench_accounts where aid = 1", ClassSelect},
		{"WITH x AS (SELECT 1) SELECT * FROM x", ClassSelect},
		{"VALUES (1), (2)", ClassSelect},
		{"TABLE foo", ClassSelect},
		{"SELECT", ClassSelect},
		{"SELECTED", ClassOther},
		// A keyword ends where the word does: letters at either end of
		// the alphabet and digits are part of it.
		{"BEGINz", ClassOther},
		{"BEGINZ", ClassOther},
		{"beginA", ClassOther},
		{"BEGIN0", ClassOther},
		{"BEGIN9", ClassOther},
		{"abort", ClassRollback},

		// DML.
		{"INSERT INTO t VALUES (1)", ClassInsert},
		{"insert into t values (1)", ClassInsert},
		{"UPDATE t SET a = 1", ClassUpdate},
		{"DELETE FROM t", ClassDelete},

		// DDL.
		{"CREATE TABLE t (a int)", ClassDDL},
		{"ALTER TABLE t ADD b int", ClassDDL},
		{"DROP TABLE t", ClassDDL},
		{"TRUNCATE t", ClassDDL},
		{"COMMENT ON TABLE t IS 'x'", ClassDDL},
		{"GRANT SELECT ON t TO u", ClassDDL},
		{"REVOKE SELECT ON t FROM u", ClassDDL},

		// Everything else.
		{"SET search_path = public", ClassOther},
		{"SHOW server_version", ClassOther},
		{"VACUUM ANALYZE t", ClassOther},
		{"LISTEN chan", ClassOther},
		{"'quoted'", ClassOther},
		{"\\d", ClassOther},

		// Leading noise.
		{"   SELECT 1", ClassSelect},
		{"\n\n\tSELECT 1", ClassSelect},
		{"\r\n\fCOMMIT", ClassCommit},
		{"-- a comment\nSELECT 1", ClassSelect},
		{"-- one\n-- two\n  INSERT INTO t VALUES (1)", ClassInsert},
		{"/* c */ DELETE FROM t", ClassDelete},
		{"/**/UPDATE t SET a = 1", ClassUpdate},
		{"/* outer /* inner */ still outer */ COMMIT", ClassCommit},
		{"/* /* */ */ SELECT 1", ClassSelect},
		{"/* /* */ SELECT 1 */ UPDATE t SET a=1", ClassUpdate},
		{"(SELECT 1)", ClassSelect},
		{"((VALUES (1)))", ClassSelect},
		{";SELECT 1", ClassSelect},
		{" ; ;BEGIN", ClassBegin},
		{"COMMIT /* between */ PREPARED 'x'", ClassCommitPrepared},
		{"ROLLBACK\n-- why\nPREPARED 'x'", ClassRollbackPrepared},
		{"PREPARE\n\tTRANSACTION 'g'", ClassPrepareTransaction},
		{"START /* x */ TRANSACTION", ClassBegin},

		// Case.
		{"SeLeCt 1", ClassSelect},
		{"Begin", ClassBegin},
		{"cOmMiT pRePaReD 'x'", ClassCommitPrepared},
		{"Create index i on t (a)", ClassDDL},

		// Only the first statement decides.
		{"SELECT 1; DELETE FROM t", ClassSelect},
		{"BEGIN; INSERT INTO t VALUES (1); COMMIT", ClassBegin},
	}
	for _, tt := range tests {
		if got := Classify([]byte(tt.sql)); got != tt.want {
			t.Errorf("Classify(%q) = %v, want %v", tt.sql, got, tt.want)
		}
	}
	if got := Classify(nil); got != ClassNone {
		t.Errorf("Classify(nil) = %v, want none", got)
	}
}

func TestStatementClassNames(t *testing.T) {
	// Every class but none round-trips through the names rules use.
	for c := ClassBegin; c < numClasses; c++ {
		got, ok := parseClass(c.String())
		if !ok || got != c {
			t.Errorf("parseClass(%q) = %v, %v; want %v, true", c.String(), got, ok, c)
		}
	}
	if _, ok := parseClass("none"); ok {
		t.Error(`parseClass("none") accepted; a rule cannot match "no statement"`)
	}
	if _, ok := parseClass("SELECT"); ok {
		t.Error(`parseClass("SELECT") accepted; class names are lower case`)
	}
	if s := numClasses.String(); s != "unknown" {
		t.Errorf("numClasses.String() = %q, want unknown", s)
	}
	if s := StatementClass(200).String(); s != "unknown" {
		t.Errorf("StatementClass(200).String() = %q, want unknown", s)
	}
}

func TestClassifyAllocatesNothing(t *testing.T) {
	inputs := [][]byte{
		[]byte("SELECT abalance FROM pgbench_accounts WHERE aid = 42"),
		[]byte("/* a /* nested */ comment */ -- and a line\n(COMMIT PREPARED 'x')"),
		[]byte("PREPARE TRANSACTION 'g'"),
		[]byte(""),
		[]byte("VACUUM"),
	}
	for _, in := range inputs {
		allocs := testing.AllocsPerRun(100, func() { _ = Classify(in) })
		if allocs != 0 {
			t.Errorf("Classify(%q) allocates %v times per run, want 0", in, allocs)
		}
	}
}
