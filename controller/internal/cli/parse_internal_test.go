package cli

import (
	"strings"
	"testing"
	"time"
)

func TestParseMemory(t *testing.T) {
	for in, want := range map[string]uint64{
		"1": 1, "4096": 4096, "512B": 512, "1K": 1024, "1k": 1024, "2Ki": 2048, "2KiB": 2048, "3KB": 3072,
		"512M": 512 << 20, "512Mi": 512 << 20, "512MiB": 512 << 20, "1G": 1 << 30, "2Gi": 2 << 30, "1T": 1 << 40, " 64M ": 64 << 20,
	} {
		got, err := parseMemory(in)
		if err != nil || got != want {
			t.Errorf("parseMemory(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"": "empty size", "M": "want a whole number", "512X": "want a whole number", "512 M": "want a whole number",
		"-5M": "want a whole number", "1.5G": "want a whole number", "512I": "want a whole number", "512IB": "want a whole number",
		"512MX": "want a whole number", "0": "more than zero", "0M": "more than zero",
		"99999999999999999999": "too large", "17179869184G": "too large", "16777216T": "too large",
	} {
		if got, err := parseMemory(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseMemory(%q) = %d, %v; want an error with %q", in, got, err, msg)
		}
	}
}

func TestParseCPU(t *testing.T) {
	for in, want := range map[string]uint32{"100%": 100, "150%": 150, "50": 50, "1%": 1, "100000%": 100000} {
		got, err := parseCPU(in)
		if err != nil || got != want {
			t.Errorf("parseCPU(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"": "want a whole percentage", "%": "want a whole percentage", "1.5%": "want a whole percentage", "-10%": "want a whole percentage",
		"abc": "want a whole percentage", "150%%": "want a whole percentage", "0%": "more than 0%", "100001%": "more than 100000%",
		"99999999999%": "want a whole percentage",
	} {
		if got, err := parseCPU(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseCPU(%q) = %d, %v; want an error with %q", in, got, err, msg)
		}
	}
}

func TestParseSeconds(t *testing.T) {
	for in, want := range map[string]uint32{"30s": 30, "1m30s": 90, "2m": 120, "1h": 3600, "1000ms": 1} {
		got, err := parseSeconds("--stop-grace", in)
		if err != nil || got != want {
			t.Errorf("parseSeconds(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{
		"": "want a duration", "30": "want a duration", "soon": "want a duration", "0s": "must be positive",
		"-5s": "must be positive", "1500ms": "whole seconds", "2562047h": "too long",
	} {
		got, err := parseSeconds("--stop-grace", in)
		if err == nil || !strings.Contains(err.Error(), msg) || !strings.Contains(err.Error(), "--stop-grace") {
			t.Errorf("parseSeconds(%q) = %d, %v; want an error naming --stop-grace with %q", in, got, err, msg)
		}
	}
}

func TestParseSince(t *testing.T) {
	for in, want := range map[string]time.Duration{"10m": 10 * time.Minute, "2h": 2 * time.Hour, "90s": 90 * time.Second, "1.5h": 90 * time.Minute} {
		got, err := parseSince(in)
		if err != nil || got != want {
			t.Errorf("parseSince(%q) = %v, %v; want %v", in, got, err, want)
		}
	}
	for in, msg := range map[string]string{"": "want a duration", "10": "want a duration", "yesterday": "want a duration", "0s": "must be positive", "-1h": "must be positive"} {
		if got, err := parseSince(in); err == nil || !strings.Contains(err.Error(), msg) {
			t.Errorf("parseSince(%q) = %v, %v; want an error with %q", in, got, err, msg)
		}
	}
}
