// Package junit writes JUnit XML reports, the format CI systems read test
// results from: pgchaos run's a test case per check, pgchaos explore's a
// test case per cell of its table.
package junit

import (
	"encoding/xml"
	"fmt"
	"time"
)

// Suite is one <testsuite>; Marshal counts its tests, failures, errors
// and skipped cases.
type Suite struct {
	Name      string `xml:"name,attr"`
	Tests     int    `xml:"tests,attr"`
	Failures  int    `xml:"failures,attr"`
	Errors    int    `xml:"errors,attr"`
	Skipped   int    `xml:"skipped,attr,omitempty"`
	Time      string `xml:"time,attr"`
	Timestamp string `xml:"timestamp,attr"`
	Hostname  string `xml:"hostname,attr,omitempty"`
	// Properties say how the run was made (its seed, its file).
	Properties []Property    `xml:"properties>property,omitempty"`
	Cases      []Case        `xml:"testcase"`
	Started    time.Time     `xml:"-"`
	Took       time.Duration `xml:"-"`
}

// Property is one <property> of a suite.
type Property struct {
	Name  string `xml:"name,attr"`
	Value string `xml:"value,attr"`
}

// Case is one <testcase>: passed, or with one of Failure, Error, Skipped.
type Case struct {
	Class   string   `xml:"classname,attr"`
	Name    string   `xml:"name,attr"`
	Time    string   `xml:"time,attr"`
	Failure *Message `xml:"failure,omitempty"`
	Error   *Message `xml:"error,omitempty"`
	Skipped *Message `xml:"skipped,omitempty"`
}

// Message is what a failure, error or skip says: a line, and the text
// (the evidence) below it.
type Message struct {
	Message string `xml:"message,attr"`
	Type    string `xml:"type,attr,omitempty"`
	Text    string `xml:",chardata"`
}

// Seconds is a duration as JUnit writes it.
func Seconds(d time.Duration) string { return fmt.Sprintf("%.3f", d.Seconds()) }

// Marshal renders s as a <testsuites> document of one suite, with its
// counts and times filled in.
func Marshal(s Suite) ([]byte, error) {
	s.Tests, s.Failures, s.Errors, s.Skipped = len(s.Cases), 0, 0, 0
	for _, c := range s.Cases {
		switch {
		case c.Failure != nil:
			s.Failures++
		case c.Error != nil:
			s.Errors++
		case c.Skipped != nil:
			s.Skipped++
		}
	}
	s.Timestamp = s.Started.UTC().Format(time.RFC3339)
	s.Time = Seconds(s.Took)
	// The totals go on <testsuites> too: some readers look only there.
	out, err := xml.MarshalIndent(struct {
		XMLName  xml.Name `xml:"testsuites"`
		Name     string   `xml:"name,attr"`
		Tests    int      `xml:"tests,attr"`
		Failures int      `xml:"failures,attr"`
		Errors   int      `xml:"errors,attr"`
		Skipped  int      `xml:"skipped,attr"`
		Time     string   `xml:"time,attr"`
		Suites   []Suite  `xml:"testsuite"`
	}{Name: s.Name, Tests: s.Tests, Failures: s.Failures, Errors: s.Errors, Skipped: s.Skipped, Time: s.Time, Suites: []Suite{s}}, "", "  ")
	if err != nil {
		return nil, err
	}
	return append([]byte(xml.Header), append(out, '\n')...), nil
}
