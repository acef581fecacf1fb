# Print an optspec for argparse to handle cmd's options that are independent of any subcommand.
function __fish_pipe_global_optspecs
    string join \n c/config= state= q/quiet v/verbose h/help V/version
end

function __fish_pipe_needs_command
    # Figure out if the current invocation already has a command.
    set -l cmd (commandline -opc)
    set -e cmd[1]
    argparse -s (__fish_pipe_global_optspecs) -- $cmd 2>/dev/null
    or return
    if set -q argv[1]
        # Also print the command, so this can be used to figure out what it is.
        echo $argv[1]
        return 1
    end
    return 0
end

function __fish_pipe_using_subcommand
    set -l cmd (__fish_pipe_needs_command)
    test -z "$cmd"
    and return 1
    contains -- $cmd[1] $argv
end

complete -c pipe -n "__fish_pipe_needs_command" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_needs_command" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_needs_command" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_needs_command" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_needs_command" -s h -l help -d 'Print help (see more with \'--help\')'
complete -c pipe -n "__fish_pipe_needs_command" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "poll" -d 'Ask each remote for its branch and pull-request heads and record what changed'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "build" -d 'Check out a commit clean and build its Docker image'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "test" -d 'Run the project\'s test command inside the image built for a commit'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "push" -d 'Push a tested image to the registries configured for its branch'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "deploy" -d 'Run the deploy targets configured for a branch, or roll back to an earlier commit'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "run" -d 'The timer\'s command: poll, then build, test, push and deploy every new commit'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "status" -d 'Show project, ref, commit, last stage, result and age from the state'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "logs" -d 'Print the saved log of a ref\'s latest (or an earlier) run'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "check" -d 'Validate the pipeline file and report every error at once'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "serve" -d 'Run the authenticated deploy receiver for this host'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "prune" -d 'Remove run logs and images pipe no longer needs, never one a deploy target runs or can roll back to'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "generate" -d 'Print or write files derived from pipe: nginx front, systemd units, completions, man pages'
complete -c pipe -n "__fish_pipe_needs_command" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand poll" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand poll" -l json -d 'Print one JSON document on stdout instead of a table'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -l dry-run -d 'List the remotes and print what changed, but record nothing'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand poll" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand build" -l commit -d 'Build this commit instead of the ref\'s recorded head' -r
complete -c pipe -n "__fish_pipe_using_subcommand build" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand build" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand build" -l here -d 'Build the checkout in the current directory, uncommitted changes included, as CI would'
complete -c pipe -n "__fish_pipe_using_subcommand build" -l dry-run -d 'Print the exact git and docker actions without running them'
complete -c pipe -n "__fish_pipe_using_subcommand build" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand build" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand build" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand build" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand test" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand test" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand test" -l here -d 'Test the image built from the checkout in the current directory'
complete -c pipe -n "__fish_pipe_using_subcommand test" -l dry-run -d 'Print the exact docker actions without running them'
complete -c pipe -n "__fish_pipe_using_subcommand test" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand test" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand test" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand test" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand push" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand push" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand push" -l force -d 'Push even though the image\'s tests did not pass'
complete -c pipe -n "__fish_pipe_using_subcommand push" -l dry-run -d 'Print the exact docker actions, secrets redacted, without running them'
complete -c pipe -n "__fish_pipe_using_subcommand push" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand push" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand push" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand push" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -l target -d 'Run only the deploy target with this name' -r
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -l commit -d 'Redeploy the image of this earlier commit (rollback)' -r
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -l json -d 'Print one JSON document on stdout: each target\'s result (and each host\'s, for a target that spans hosts)'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -l dry-run -d 'Print the exact docker, command and HTTP actions, secrets redacted, without running them'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand deploy" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand run" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand run" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand run" -l retry -d 'Rebuild commits whose last attempt failed'
complete -c pipe -n "__fish_pipe_using_subcommand run" -l json -d 'Print one JSON summary on stdout'
complete -c pipe -n "__fish_pipe_using_subcommand run" -l dry-run -d 'Poll and print every action that would run, without running it'
complete -c pipe -n "__fish_pipe_using_subcommand run" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand run" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand run" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand run" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand status" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand status" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand status" -l json -d 'Print one JSON document on stdout instead of a table'
complete -c pipe -n "__fish_pipe_using_subcommand status" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand status" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand status" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand status" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand logs" -l run -d 'Show run number N instead of the latest' -r
complete -c pipe -n "__fish_pipe_using_subcommand logs" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand logs" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand logs" -l json -d 'Print one JSON document on stdout'
complete -c pipe -n "__fish_pipe_using_subcommand logs" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand logs" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand logs" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand logs" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand check" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand check" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand check" -l json -d 'Print one JSON document on stdout: the file\'s summary and what organization discovery would make of each listed repository'
complete -c pipe -n "__fish_pipe_using_subcommand check" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand check" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand check" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand check" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand serve" -l listen -d 'Address to listen on [default: the pipeline file\'s `serve.listen`, else 127.0.0.1:9010]' -r
complete -c pipe -n "__fish_pipe_using_subcommand serve" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand serve" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand serve" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand serve" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand serve" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand serve" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand prune" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand prune" -l dry-run -d 'Print every file and the exact `docker image rm` commands, but remove nothing'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -l json -d 'Print one JSON document on stdout instead of lines'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand prune" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "nginx" -d 'Print the nginx configuration that routes `<service>.DOMAIN` to each service in the deploy targets\' `ingress` tables (settings from `[ingress]`)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "systemd" -d 'Write pipe.service, pipe.timer, pipe-serve.service and pipe-prune.service/.timer into a directory'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "webhook" -d 'Print the forge webhook to add for a project: its URL, secret and the events to select'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "completions" -d 'Print the completion script for a shell'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "man" -d 'Write man pages (pipe.1 and one per subcommand) into a directory'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and not __fish_seen_subcommand_from nginx systemd webhook completions man help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from nginx" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -l bin -d 'Path of the pipe binary the units start' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from systemd" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -l url -d 'Public base URL the forge reaches `pipe serve` at [default: http://`serve.listen`]' -r
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from webhook" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from completions" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -s c -l config -d 'Pipeline file to read [default: ./pipeline.toml, then /etc/pipe/pipeline.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -l state -d 'State file to read and update [default: $STATE_DIRECTORY/state.toml under systemd, /var/lib/pipe/state.toml as root, else $XDG_STATE_HOME/pipe/state.toml]' -r -F
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -s q -l quiet -d 'Print only errors and warnings'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -s v -l verbose -d 'Print more detail (repeat for even more, e.g. every git and docker action)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -s h -l help -d 'Print help'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from man" -s V -l version -d 'Print version'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "nginx" -d 'Print the nginx configuration that routes `<service>.DOMAIN` to each service in the deploy targets\' `ingress` tables (settings from `[ingress]`)'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "systemd" -d 'Write pipe.service, pipe.timer, pipe-serve.service and pipe-prune.service/.timer into a directory'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "webhook" -d 'Print the forge webhook to add for a project: its URL, secret and the events to select'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "completions" -d 'Print the completion script for a shell'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "man" -d 'Write man pages (pipe.1 and one per subcommand) into a directory'
complete -c pipe -n "__fish_pipe_using_subcommand generate; and __fish_seen_subcommand_from help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "poll" -d 'Ask each remote for its branch and pull-request heads and record what changed'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "build" -d 'Check out a commit clean and build its Docker image'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "test" -d 'Run the project\'s test command inside the image built for a commit'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "push" -d 'Push a tested image to the registries configured for its branch'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "deploy" -d 'Run the deploy targets configured for a branch, or roll back to an earlier commit'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "run" -d 'The timer\'s command: poll, then build, test, push and deploy every new commit'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "status" -d 'Show project, ref, commit, last stage, result and age from the state'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "logs" -d 'Print the saved log of a ref\'s latest (or an earlier) run'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "check" -d 'Validate the pipeline file and report every error at once'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "serve" -d 'Run the authenticated deploy receiver for this host'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "prune" -d 'Remove run logs and images pipe no longer needs, never one a deploy target runs or can roll back to'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "generate" -d 'Print or write files derived from pipe: nginx front, systemd units, completions, man pages'
complete -c pipe -n "__fish_pipe_using_subcommand help; and not __fish_seen_subcommand_from poll build test push deploy run status logs check serve prune generate help" -f -a "help" -d 'Print this message or the help of the given subcommand(s)'
complete -c pipe -n "__fish_pipe_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "nginx" -d 'Print the nginx configuration that routes `<service>.DOMAIN` to each service in the deploy targets\' `ingress` tables (settings from `[ingress]`)'
complete -c pipe -n "__fish_pipe_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "systemd" -d 'Write pipe.service, pipe.timer, pipe-serve.service and pipe-prune.service/.timer into a directory'
complete -c pipe -n "__fish_pipe_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "webhook" -d 'Print the forge webhook to add for a project: its URL, secret and the events to select'
complete -c pipe -n "__fish_pipe_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "completions" -d 'Print the completion script for a shell'
complete -c pipe -n "__fish_pipe_using_subcommand help; and __fish_seen_subcommand_from generate" -f -a "man" -d 'Write man pages (pipe.1 and one per subcommand) into a directory'
