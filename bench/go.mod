module github.com/seghub/seghub/bench

go 1.26.0

replace github.com/seghub/seghub/gen => ../gen

replace github.com/seghub/seghub/pkg => ../pkg
replace github.com/seghub/seghub/services/destsim => ../services/destsim
replace github.com/seghub/seghub/services/connector => ../services/connector
replace github.com/seghub/seghub/services/segmentsync => ../services/segmentsync
replace github.com/seghub/seghub/services/targeting => ../services/targeting
replace github.com/seghub/seghub/services/eventrelay => ../services/eventrelay
