package tinytags;

import java.io.File;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import org.apache.hadoop.conf.Configuration;
import org.apache.hadoop.hdfs.MiniDFSCluster;

/**
 * Runs a real HDFS (one NameNode, N DataNodes) on loopback through Hadoop's MiniDFSCluster, with
 * its storage under a persistent base dir: formatted on first start only, so files survive a
 * restart. Prints "READY hdfs://127.0.0.1:PORT webhdfs=http://127.0.0.1:HTTP" once the NameNode
 * has left safe mode.
 *
 * <p>Usage: HdfsLauncher --base DIR [--rpc-port 9000] [--http-port 9870] [--datanodes 1]
 */
public final class HdfsLauncher {

  private HdfsLauncher() {}

  public static void main(String[] args) throws Exception {
    Path base = null;
    int rpcPort = 9000;
    int httpPort = 9870;
    int datanodes = 1;
    for (int i = 0; i < args.length; i += 2) {
      if (i + 1 >= args.length) {
        fail(args[i] + " needs a value");
      }
      String value = args[i + 1];
      switch (args[i]) {
        case "--base" -> base = Path.of(value).toAbsolutePath();
        case "--rpc-port" -> rpcPort = Integer.parseInt(value);
        case "--http-port" -> httpPort = Integer.parseInt(value);
        case "--datanodes" -> datanodes = Integer.parseInt(value);
        default -> fail("unknown argument " + args[i]);
      }
    }
    if (base == null) {
      fail("--base is required");
    }
    Files.createDirectories(base);
    Path formatted = base.resolve(".formatted");
    boolean format = !Files.exists(formatted);

    Configuration conf = new Configuration();
    // A development cluster on loopback: no users or permissions, one replica per block.
    conf.setBoolean("dfs.permissions.enabled", false);
    conf.setInt("dfs.replication", 1);
    conf.setBoolean("dfs.webhdfs.enabled", true);
    conf.set("dfs.namenode.rpc-bind-host", "127.0.0.1");
    conf.set("dfs.namenode.http-bind-host", "127.0.0.1");
    conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".hosts", "*");
    conf.set("hadoop.proxyuser." + System.getProperty("user.name") + ".groups", "*");
    // Leave safe mode as soon as the DataNodes report, instead of the default 30 s extension.
    conf.setInt("dfs.namenode.safemode.extension", 0);

    MiniDFSCluster cluster = null;
    try {
      cluster =
          new MiniDFSCluster.Builder(conf, new File(base.toString()))
              .nameNodePort(rpcPort)
              .nameNodeHttpPort(httpPort)
              .numDataNodes(datanodes)
              .format(format)
              .manageNameDfsDirs(true)
              .manageDataDfsDirs(true)
              .waitSafeMode(true)
              .build();
      cluster.waitActive();
    } catch (Exception e) {
      if (cluster != null) {
        cluster.shutdown();
      }
      fail("HDFS did not start (rpc 127.0.0.1:" + rpcPort + ", http " + httpPort + "): " + e);
    }
    if (format) {
      Files.writeString(formatted, "formatted by tinytags\n", StandardCharsets.UTF_8);
    }
    final MiniDFSCluster running = cluster;
    Runtime.getRuntime().addShutdownHook(new Thread(() -> running.shutdown(false)));
    System.out.println(
        "READY hdfs://127.0.0.1:"
            + cluster.getNameNodePort()
            + " webhdfs=http://127.0.0.1:"
            + cluster.getNameNode().getHttpAddress().getPort()
            + " datanodes="
            + datanodes
            + (format ? " (formatted)" : " (existing data)"));
    System.out.flush();
    Thread.currentThread().join();
  }

  private static void fail(String message) {
    System.err.println("ERROR hdfs launcher: " + message);
    System.exit(1);
  }
}
