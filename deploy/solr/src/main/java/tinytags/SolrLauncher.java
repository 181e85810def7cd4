package tinytags;

import java.io.IOException;
import java.io.UncheckedIOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.StandardCopyOption;
import java.util.ArrayList;
import java.util.List;
import java.util.Map;
import java.util.Properties;
import java.util.stream.Stream;
import org.apache.solr.core.CoreContainer;
import org.apache.solr.embedded.JettyConfig;
import org.apache.solr.embedded.JettySolrRunner;

/**
 * Runs a real standalone Solr 9 (Jetty + CoreContainer) on loopback. The configset folder is
 * installed (refreshed on every start: solr_conf/ is the single source of truth) as the named
 * configset "tinytags", and one core per --core is created from it on first start. Prints "READY url" once every core has loaded;
 * exits 1 with the reason when a core fails, since Solr itself only logs such failures.
 *
 * <p>With --zk-host the node joins SolrCloud instead (no cores; collections are created through the
 * Collections API once the configset is uploaded).
 *
 * <p>Usage: SolrLauncher --home DIR --configset DIR [--port 8983] [--core NAME]... [--zk-host H:P]
 */
public final class SolrLauncher {

  private SolrLauncher() {}

  public static void main(String[] args) throws Exception {
    Path home = null;
    Path configset = null;
    int port = 8983;
    String zkHost = "";
    List<String> cores = new ArrayList<>();
    for (int i = 0; i < args.length; i++) {
      String value = i + 1 < args.length ? args[i + 1] : null;
      switch (args[i]) {
        case "--home" -> home = Path.of(require(value, "--home")).toAbsolutePath();
        case "--configset" -> configset = Path.of(require(value, "--configset")).toAbsolutePath();
        case "--port" -> port = Integer.parseInt(require(value, "--port"));
        case "--core" -> cores.add(require(value, "--core"));
        case "--zk-host" -> zkHost = require(value, "--zk-host");
        default -> fail("unknown argument " + args[i]);
      }
      i++;
    }
    if (home == null || configset == null) {
      fail("--home and --configset are required");
    }
    if (!Files.isRegularFile(configset.resolve("solrconfig.xml"))) {
      fail("configset " + configset + " has no solrconfig.xml");
    }
    boolean cloud = !zkHost.isEmpty();
    if (cloud && !cores.isEmpty()) {
      fail("--core is for a standalone node; in SolrCloud mode create collections instead");
    }
    if (!cloud && cores.isEmpty()) {
      cores.add("tinytags");
    }
    prepareHome(home, configset, cores, cloud);

    Properties nodeProperties = new Properties();
    nodeProperties.setProperty("host", "127.0.0.1");
    if (cloud) {
      nodeProperties.setProperty("zkHost", zkHost);
    }
    JettyConfig config =
        JettyConfig.builder().setPort(port).setContext("/solr").stopAtShutdown(true).build();
    JettySolrRunner jetty = new JettySolrRunner(home.toString(), nodeProperties, config);
    try {
      jetty.start();
    } catch (Exception e) {
      fail("Jetty did not start on 127.0.0.1:" + port + ": " + e);
    }
    CoreContainer container = jetty.getCoreContainer();
    if (container == null) {
      jetty.stop();
      fail("Solr's CoreContainer did not load; see the log above");
    }
    Map<String, CoreContainer.CoreLoadFailure> failures = container.getCoreInitFailures();
    if (!failures.isEmpty()) {
      StringBuilder reasons = new StringBuilder();
      failures.forEach(
          (name, failure) -> reasons.append(name).append(": ").append(rootCause(failure.exception)));
      jetty.stop();
      fail("core(s) failed to load: " + reasons);
    }
    for (String core : cores) {
      if (container.getCore(core) == null) {
        jetty.stop();
        fail("core " + core + " is not loaded");
      } else {
        container.getCore(core).close();
      }
    }
    System.out.println(
        "READY " + jetty.getBaseUrl() + (cloud ? " zkHost=" + zkHost : " cores=" + cores));
    System.out.flush();
    Runtime.getRuntime()
        .addShutdownHook(
            new Thread(
                () -> {
                  try {
                    jetty.stop();
                  } catch (Exception e) {
                    System.err.println("error stopping Solr: " + e);
                  }
                }));
    Thread.currentThread().join();
  }

  private static void prepareHome(Path home, Path configset, List<String> cores, boolean cloud)
      throws IOException {
    Files.createDirectories(home);
    Files.writeString(
        home.resolve("solr.xml"),
        "<?xml version=\"1.0\" encoding=\"UTF-8\" ?>\n<solr>\n"
            + "  <int name=\"maxBooleanClauses\">${solr.max.booleanClauses:1024}</int>\n"
            + "  <solrcloud>\n"
            + "    <str name=\"host\">${host:127.0.0.1}</str>\n"
            + "    <int name=\"hostPort\">${hostPort:8983}</int>\n"
            + "    <str name=\"hostContext\">${hostContext:solr}</str>\n"
            // Any zkHost entry, even an empty one, makes Solr try ZooKeeper: cloud nodes only.
            + (cloud ? "    <str name=\"zkHost\">${zkHost}</str>\n" : "")
            + "    <int name=\"zkClientTimeout\">${zkClientTimeout:30000}</int>\n"
            + "  </solrcloud>\n"
            + "</solr>\n",
        StandardCharsets.UTF_8);
    // Named configset, so clients can create more cores from it (CoreAdmin CREATE configSet=tinytags).
    copyTree(configset, home.resolve("configsets").resolve("tinytags").resolve("conf"));
    for (String core : cores) {
      Path coreDir = home.resolve(core);
      Files.createDirectories(coreDir);
      Path props = coreDir.resolve("core.properties");
      if (!Files.exists(props)) {
        Files.writeString(
            props, "name=" + core + "\nconfigSet=tinytags\n", StandardCharsets.UTF_8);
      }
    }
  }

  private static void copyTree(Path from, Path to) throws IOException {
    try (Stream<Path> paths = Files.walk(from)) {
      paths.forEach(
          source -> {
            Path target = to.resolve(from.relativize(source).toString());
            try {
              if (Files.isDirectory(source)) {
                Files.createDirectories(target);
              } else {
                Files.copy(source, target, StandardCopyOption.REPLACE_EXISTING);
              }
            } catch (IOException e) {
              throw new UncheckedIOException(e);
            }
          });
    }
  }

  private static String rootCause(Throwable t) {
    Throwable cause = t;
    while (cause.getCause() != null && cause.getCause() != cause) {
      cause = cause.getCause();
    }
    return cause.toString();
  }

  private static String require(String value, String flag) {
    if (value == null) {
      fail(flag + " needs a value");
    }
    return value;
  }

  private static void fail(String message) {
    System.err.println("ERROR solr launcher: " + message);
    System.exit(1);
  }
}
