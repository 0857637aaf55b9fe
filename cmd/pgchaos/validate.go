package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strings"

	"github.com/pgchaos/pgchaos/experiments"
)

const validateUsage = `Usage:
  pgchaos validate EXPERIMENT.yaml... [--var KEY=VALUE]...

Checks experiment files without running them: prints "FILE: ok" for each good
file, and every problem as FILE:LINE:COLUMN: field: message. Exit status 2 when
any file has a problem. ${env:NAME} in a file is read from the environment,
${var:KEY} from --var.
`

func runValidate(args []string, stdout, stderr io.Writer) error {
	flags := newFlagSet("pgchaos validate", stderr, validateUsage)
	varFlags := flags.StringArray("var", nil, "set ${var:KEY} in the files, as KEY=VALUE (repeatable)")
	if err := parseFlags(flags, args); err != nil {
		return err
	}
	if flags.NArg() == 0 {
		return errUsage{errors.New("validate: give one or more experiment files")}
	}
	vars := map[string]string{}
	for _, kv := range *varFlags {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return errUsage{fmt.Errorf("validate: --var %q: want KEY=VALUE", kv)}
		}
		vars[k] = v
	}
	bad := 0
	for _, file := range flags.Args() {
		data, err := os.ReadFile(file)
		if err != nil {
			var pe *fs.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			err = fmt.Errorf("%s: %w", file, err)
		} else {
			_, err = experiments.Parse(data, file, vars, os.LookupEnv)
		}
		if err != nil {
			bad++
			// One problem a line, with nothing in front, so that editors
			// and CI annotations can jump to FILE:LINE:COLUMN.
			fmt.Fprintln(stderr, err)
			continue
		}
		fmt.Fprintf(stdout, "%s: ok\n", file)
	}
	if bad > 0 {
		return errUsage{fmt.Errorf("validate: %d of %d files have problems", bad, flags.NArg())}
	}
	return nil
}
