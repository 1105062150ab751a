/* mcphub-control: parses flags (each with an environment twin) and runs the daemon. */
#include "ctl.h"
#include "log.h"
#include "rpc.h"

#include <getopt.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>

static void usage(FILE *out)
{
    fputs("usage: mcphub-control [--config FILE] [--listen ADDR] [--admin-listen ADDR]\n"
          "\n"
          "Owns mcphub's configuration, sessions and upstream instances; edges and admin\n"
          "clients talk to it over gRPC.\n"
          "\n"
          "  --config FILE        MCPHub-format settings file (env MCPHUB_CONFIG);\n"
          "                       without one, an embedded default serving the fixture server\n"
          "  --listen ADDR        Gateway + Health listener (env MCPHUB_LISTEN;\n"
          "                       default: the file's hub.listen, else 127.0.0.1:50051)\n"
          "  --admin-listen ADDR  Admin + Health listener (env MCPHUB_ADMIN_LISTEN;\n"
          "                       default: the file's hub.adminListen, else 127.0.0.1:50052)\n"
          "  --drain-ms N         how long SIGTERM waits for calls (env MCPHUB_DRAIN_MS; 5000)\n"
          "  --admin-token-file FILE\n"
          "                       Admin calls must carry `authorization: Bearer TOKEN`, TOKEN\n"
          "                       being the file's first line (env MCPHUB_ADMIN_TOKEN_FILE)\n"
          "  --metrics-listen ADDR\n"
          "                       HTTP listener for GET /metrics (Prometheus) and /healthz\n"
          "                       (env MCPHUB_METRICS_LISTEN; default: none)\n"
          "  --log-level LEVEL    error|warn|info|debug (env MCPHUB_LOG_LEVEL; info)\n"
          "  --help               this text\n"
          "\n"
          "A listen address with port 0 picks a free port; the bound one is logged.\n",
          out);
}

int main(int argc, char **argv)
{
    static const struct option longopts[] = {
        {"config", required_argument, NULL, 'c'},
        {"listen", required_argument, NULL, 'l'},
        {"admin-listen", required_argument, NULL, 'a'},
        {"drain-ms", required_argument, NULL, 'd'},
        {"admin-token-file", required_argument, NULL, 'T'},
        {"metrics-listen", required_argument, NULL, 'M'},
        {"log-level", required_argument, NULL, 'L'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    ctl_opts opts = {
        .config_path = getenv("MCPHUB_CONFIG"),
        .listen = getenv("MCPHUB_LISTEN"),
        .admin_listen = getenv("MCPHUB_ADMIN_LISTEN"),
        .admin_token_file = getenv("MCPHUB_ADMIN_TOKEN_FILE"),
        .metrics_listen = getenv("MCPHUB_METRICS_LISTEN"),
    };
    const char *drain = getenv("MCPHUB_DRAIN_MS");
    ctl *c = NULL;
    int opt;
    int rc;

    log_init("control");
    /* A write to an upstream that closed its stdin must be an error, not the end of us. */
    signal(SIGPIPE, SIG_IGN);
    while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
        switch (opt) {
        case 'c':
            opts.config_path = optarg;
            break;
        case 'l':
            opts.listen = optarg;
            break;
        case 'a':
            opts.admin_listen = optarg;
            break;
        case 'd':
            drain = optarg;
            break;
        case 'T':
            opts.admin_token_file = optarg;
            break;
        case 'M':
            opts.metrics_listen = optarg;
            break;
        case 'L':
            if (log_level_parse(optarg) < 0) {
                fprintf(stderr, "mcphub-control: unknown log level '%s'\n", optarg);
                return 1;
            }
            log_set_level((log_level)log_level_parse(optarg));
            break;
        case 'h':
            usage(stdout);
            return 0;
        default:
            usage(stderr);
            return 1;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "mcphub-control: unexpected argument '%s'\n", argv[optind]);
        usage(stderr);
        return 1;
    }
    if (drain) {
        char *end;
        long v = strtol(drain, &end, 10);

        if (*end || v <= 0) {
            fprintf(stderr, "mcphub-control: --drain-ms wants a positive number\n");
            return 1;
        }
        opts.drain_ms = v;
    }
    /* gRPC's threads start with these signals blocked, so the kernel hands them to the
     * loop thread, whose libuv handlers see them at once. (A thread parked in a raw futex
     * wait would otherwise take SIGTERM and, under ThreadSanitizer, sit on it.) */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    rpc_global_init();
    rc = ctl_new(&opts, &c);
    pthread_sigmask(SIG_UNBLOCK, &sigs, NULL);
    if (rc == 0)
        rc = ctl_run(c);
    ctl_free(c);
    rpc_global_shutdown();
    return rc == 0 ? 0 : 1;
}
