package main

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	"sigs.k8s.io/yaml"
)

// outputFormat is the -o flag: a human-readable table or a machine-readable
// encoding of the API message.
type outputFormat string

const (
	outputTable outputFormat = ""
	outputJSON  outputFormat = "json"
	outputYAML  outputFormat = "yaml"
)

func parseOutput(s string) (outputFormat, error) {
	switch f := outputFormat(strings.ToLower(s)); f {
	case outputTable, "table", "wide":
		return outputTable, nil
	case outputJSON, outputYAML:
		return f, nil
	}
	return "", usageErrorf("output %q: want json or yaml (or nothing for a table)", s)
}

// printer writes API answers in the chosen format.
type printer struct {
	w      io.Writer
	format outputFormat
}

// print writes m as JSON or YAML, or calls table with a tabwriter that is
// flushed afterwards.
func (p printer) print(m proto.Message, table func(w io.Writer)) error {
	switch p.format {
	case outputJSON:
		b, err := (protojson.MarshalOptions{Multiline: true, Indent: "  "}).Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	case outputYAML:
		b, err := toYAML(m)
		if err != nil {
			return err
		}
		_, err = p.w.Write(b)
		return err
	}
	tw := newTabWriter(p.w)
	table(tw)
	return tw.Flush()
}

// printStreamed writes one message of a stream: a JSON object per line, a
// YAML document per message, or a table row through row.
func (p printer) printStreamed(m proto.Message, row func(w io.Writer)) error {
	switch p.format {
	case outputJSON:
		b, err := protojson.Marshal(m)
		if err != nil {
			return fmt.Errorf("encoding JSON: %w", err)
		}
		_, err = fmt.Fprintf(p.w, "%s\n", b)
		return err
	case outputYAML:
		b, err := toYAML(m)
		if err != nil {
			return err
		}
		_, err = fmt.Fprintf(p.w, "---\n%s", b)
		return err
	}
	row(p.w)
	return nil
}

func toYAML(m proto.Message) ([]byte, error) {
	j, err := protojson.Marshal(m)
	if err != nil {
		return nil, fmt.Errorf("encoding JSON: %w", err)
	}
	b, err := yaml.JSONToYAML(j)
	if err != nil {
		return nil, fmt.Errorf("encoding YAML: %w", err)
	}
	return b, nil
}

func newTabWriter(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, 0, 8, 2, ' ', 0)
}

// row writes tab-separated cells and a newline; empty cells print as "-".
func row(w io.Writer, cells ...any) {
	parts := make([]string, len(cells))
	for i, c := range cells {
		s := fmt.Sprint(c)
		if s == "" {
			s = "-"
		}
		parts[i] = s
	}
	fmt.Fprintln(w, strings.Join(parts, "\t"))
}
