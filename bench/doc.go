// Package bench holds seghub's load tools and cross-service benchmarks; each
// result, with the command that produced it, is in RESULTS.md.
package bench
