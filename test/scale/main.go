package main

import (
	"flag"
	"fmt"
	"os"
)

func main() {
	scenario := flag.String("scenario", "S1", "scenario to run: S1, S2 or S3")
	flag.Parse()
	fmt.Fprintf(os.Stderr, "scale: scenario %s: harness not implemented yet\n", *scenario)
	os.Exit(2)
}
