# Expands "-- include NAME.lua" lines (from src/lua/) and prints the script either as it is
# (c=0: what tests load into a real redis-server) or as a C string literal (c=1: what scripts.c
# embeds), so that the .lua files are the only copy of each script.
# Character by character: gsub's handling of backslashes differs between awks.
function emit(line,    out, i, ch) {
    if (!c) {
        print line
        return
    }
    out = ""
    for (i = 1; i <= length(line); i++) {
        ch = substr(line, i, 1)
        if (ch == "\\" || ch == "\"")
            out = out "\\"
        out = out ch
    }
    print "\"" out "\\n\""
}
function expand(path,    line, name) {
    while ((getline line < path) > 0) {
        if (line ~ /^-- include [a-z_]+\.lua$/) {
            name = line
            sub(/^-- include /, "", name)
            expand(dir "/" name)
        } else {
            emit(line)
        }
    }
    close(path)
}
BEGIN { dir = "src/lua"; expand(ARGV[1]); exit }
