module github.com/seghub/seghub/services/destsim

go 1.26.0

require github.com/seghub/seghub/pkg v0.0.0

replace github.com/seghub/seghub/pkg => ../../pkg
