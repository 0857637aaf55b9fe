package verify

import (
	"context"
	"fmt"
	"math/big"
	"strings"

	"github.com/jackc/pgx/v5"

	"github.com/pgchaos/pgchaos/experiments"
)

// Defaults of a bank workload, as experiments.Parse fills them in.
const (
	defaultAccounts       = 10
	defaultInitialBalance = 100
)

// BankTable is the table a bank workload keeps its accounts in.
func BankTable(workload string) string { return "pgchaos_bank_" + workload }

// bankInvariant checks that transfers moved money but neither made nor
// destroyed any: the total is accounts × initial balance.
func bankInvariant(ctx context.Context, c *experiments.BankInvariant, run Run) Verdict {
	v := newVerdict(c.Type(), c.Workload)
	accounts, initial := int64(defaultAccounts), int64(defaultInitialBalance)
	if w, ok := run.Workloads[c.Workload]; ok && w.Bank != nil {
		if w.Bank.Accounts > 0 {
			accounts = int64(w.Bank.Accounts)
		}
		initial = w.Bank.InitialBalance
	}
	want := new(big.Int).Mul(big.NewInt(accounts), big.NewInt(initial))

	conn, err := connect(ctx, run.VerifyDSN)
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	defer closeConn(ctx, conn)
	table, err := resolveTable(ctx, conn, BankTable(c.Workload))
	if err != nil {
		return failed(v.Type, c.Workload, err)
	}
	// numeric text keeps a sum past int64 exact.
	var rows int64
	var sum, minB, maxB *string
	err = conn.QueryRow(ctx, "SELECT count(*), sum(balance)::text, min(balance)::text, max(balance)::text FROM "+table).
		Scan(&rows, &sum, &minB, &maxB)
	if err != nil {
		return failed(v.Type, c.Workload, fmt.Errorf("summing balances of %s: %w", table, err))
	}
	got := new(big.Int)
	if sum != nil {
		if _, ok := got.SetString(*sum, 10); !ok {
			return failed(v.Type, c.Workload, fmt.Errorf("sum of balances of %s is %q, not an integer", table, *sum))
		}
	}
	e := v.Evidence
	e["table"] = table
	e["accounts_expected"] = accounts
	e["accounts"] = rows
	e["initial_balance"] = initial
	e["total_expected"] = want.String()
	e["total"] = got.String()
	e["min_balance"] = deref(minB)
	e["max_balance"] = deref(maxB)
	diff := new(big.Int).Sub(got, want)
	e["difference"] = diff.String()
	if diff.Sign() == 0 {
		v.judge(true, "total balance %s over %d accounts, as it started (%d × %d)", got, rows, accounts, initial)
		return v
	}
	how := "created"
	if diff.Sign() < 0 {
		how = "destroyed"
	}
	v.judge(false, "total balance is %s, want %s (%d × %d): %s was %s", got, want, accounts, initial, new(big.Int).Abs(diff), how)
	return v
}

func deref(s *string) any {
	if s == nil {
		return nil
	}
	return *s
}

// resolveTable finds a table the workload created: named exactly (quoted),
// or as an unquoted name would fold to lower case.
func resolveTable(ctx context.Context, conn *pgx.Conn, name string) (string, error) {
	candidates := []string{pgx.Identifier{name}.Sanitize()}
	if lower := strings.ToLower(name); lower != name {
		candidates = append(candidates, pgx.Identifier{lower}.Sanitize())
	}
	for _, c := range candidates {
		var found *string
		if err := conn.QueryRow(ctx, "SELECT to_regclass($1)::text", c).Scan(&found); err != nil {
			return "", fmt.Errorf("looking up table %s: %w", c, err)
		}
		if found != nil {
			return c, nil
		}
	}
	return "", fmt.Errorf("table %s does not exist", candidates[0])
}
