module github.com/seghub/seghub/web

go 1.26.0
