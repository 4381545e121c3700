package config

import "testing"

// CommandBar's recurring-sync limit depends on the plan: a setting, 10 by
// default; other destinations keep the catalogue's.
func TestCommandBarRecurringLimit(t *testing.T) {
	t.Parallel()
	c, err := Load(nil, func(string) string { return "" })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RecurringLimit("commandbar", 10); got != 10 {
		t.Errorf("default CommandBar limit = %d, want 10", got)
	}
	c, err = Load(nil, func(k string) string { return map[string]string{"SEGHUB_COMMANDBAR_RECURRING_LIMIT": "25"}[k] })
	if err != nil {
		t.Fatal(err)
	}
	if got := c.RecurringLimit("commandbar", 10); got != 25 {
		t.Errorf("CommandBar limit = %d, want the plan's 25", got)
	}
	if got := c.RecurringLimit("appcues", 10); got != 10 {
		t.Errorf("Appcues limit = %d, want the catalogue's 10", got)
	}
	if _, err := Load([]string{"--commandbar-recurring-limit", "0"}, func(string) string { return "" }); err == nil {
		t.Error("a limit of 0 was accepted")
	}
}
